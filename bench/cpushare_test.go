package bench_test

import (
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// profileEnv, set to a path prefix, writes this process's CPU profile
// while a benchmark measures, and only then (FeedWriterThroughput: each
// pgbench run; FeedFollowers: the updates), to <prefix>-<what>.prof: the
// followers' work without their start. Not with go test's -cpuprofile.
const profileEnv = "PGFALLBACK_BENCH_CPUPROFILE"

// startProfile starts the CPU profile named what when profileEnv asks for
// one, and returns what stops it (once; later calls do nothing).
func startProfile(b *testing.B, what string) (stop func()) {
	b.Helper()
	prefix := strings.TrimSpace(os.Getenv(profileEnv))
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(prefix + "-" + what + ".prof")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("%s: %v (not with go test's -cpuprofile)", profileEnv, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				b.Error(err)
			}
		})
	}
}

// cpuShares accounts the CPU time PostgreSQL's processes used during one
// pgbench run, by who they served, from the samples of pg_stat_activity
// that sampleWaits takes: on two shared cores, a feed's cost to writers is
// mostly CPU taken from them, and this says whose. A backend's time is its
// last sample's less its first; one that connected after the first sample
// (pgbench's) counts from zero, and one sampled last up to writerSampleEvery
// before it exited loses that much. Without /proc (a server in Docker on
// another kernel namespace) nothing is accounted.
type cpuShares struct {
	first, last map[int]float64 // pid → CPU-s
	role        map[int]string
	sampled     int
	machine0    [2]float64 // /proc/stat: busy, total, in seconds of one core
}

func newCPUShares() *cpuShares {
	c := &cpuShares{first: map[int]float64{}, last: map[int]float64{}, role: map[int]string{}}
	c.machine0 = machineCPU()
	return c
}

// sample records pid's CPU time; role names what the backend serves.
func (c *cpuShares) sample(pid int, role string) {
	cpu, ok := procCPU(pid)
	if !ok {
		return
	}
	if _, seen := c.last[pid]; !seen {
		if c.sampled == 0 {
			c.first[pid] = cpu
		} else {
			c.first[pid] = 0
		}
	}
	c.last[pid], c.role[pid] = cpu, role
}

// endSample marks the end of one round of samples.
func (c *cpuShares) endSample() { c.sampled++ }

// String summarises the run: the machine's busy share, then PostgreSQL's
// CPU-s by role, largest first.
func (c *cpuShares) String() string {
	m1 := machineCPU()
	busy, total := m1[0]-c.machine0[0], m1[1]-c.machine0[1]
	by := map[string]float64{}
	var sum float64
	for pid, cpu := range c.last {
		d := cpu - c.first[pid]
		by[c.role[pid]] += d
		sum += d
	}
	if len(by) == 0 {
		return "CPU not accounted (no /proc for the server's processes)"
	}
	roles := make([]string, 0, len(by))
	for r := range by {
		roles = append(roles, r)
	}
	sort.Slice(roles, func(i, j int) bool { return by[roles[i]] > by[roles[j]] })
	parts := make([]string, 0, len(roles))
	for _, r := range roles {
		parts = append(parts, fmt.Sprintf("%s %.2f", r, by[r]))
	}
	return fmt.Sprintf("machine busy %.2f of %.2f core-s (%.0f%%); PostgreSQL %.2f CPU-s: %s",
		busy, total, 100*busy/max(total, 1e-9), sum, strings.Join(parts, ", "))
}

// backendRole names what a backend of pg_stat_activity serves; waker: it
// holds an advisory lock (the feed's waker is the only session that does).
func backendRole(appName, backendType string, waker bool) string {
	switch {
	case appName == writerAppName:
		return "pgbench's sessions"
	case appName == "pgfallback-feed" && waker:
		return "feed waker"
	case appName == "pgfallback-feed":
		return "feed listeners"
	case backendType == "client backend":
		return "other sessions (followers' reads, the benchmark's)"
	default:
		return backendType
	}
}

// procCPU is pid's user and system CPU time in seconds, from /proc.
func procCPU(pid int) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, true // USER_HZ
}

// machineCPU is /proc/stat's busy and total time over all cores, in
// seconds (zero without /proc).
func machineCPU() [2]float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]float64{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return [2]float64{}
	}
	var total, idle float64
	for i, s := range f[1:min(len(f), 9)] { // guest and guest_nice are in user and nice already
		v, _ := strconv.ParseFloat(s, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return [2]float64{(total - idle) / 100, total / 100}
}
