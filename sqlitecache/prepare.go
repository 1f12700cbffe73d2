package sqlitecache

import (
	"runtime"
	"sync"
)

// prepareAll runs prep(i) for i in [0, n) and returns the error of the
// lowest failing index. Bulk writes validate and encode every entry before
// the transaction (so a bad entry writes nothing); validation JSON-encodes
// the metadata and was most of a bulk write's time, so large batches spread
// it over the CPUs.
func prepareAll(n int, prep func(i int) error) error {
	workers := min(runtime.GOMAXPROCS(0), n/256)
	if workers <= 1 {
		for i := range n {
			if err := prep(i); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				if errs[i] = prep(i); errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
