package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/repository"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	live := context.Background()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	pg := func(code string) error {
		return fmt.Errorf("pgstore: get: %w", &pgconn.PgError{Code: code, Message: "x"})
	}
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: err}}
	}

	for _, tc := range []struct {
		name  string
		ctx   context.Context
		err   error
		class Class
		kind  FailureKind
	}{
		{"success", live, nil, Answer, ""},
		{"not found", live, fmt.Errorf("x: %w", repository.ErrNotFound), Answer, ""},
		{"conflict", live, repository.ErrConflict, Answer, ""},
		{"already exists", live, repository.ErrAlreadyExists, Answer, ""},
		{"invalid", live, repository.Invalid("Name", "bad"), Answer, ""},
		{"invalid wrapping a PgError", live, fmt.Errorf("%w: %w", repository.Invalid("Name", "bad"), &pgconn.PgError{Code: "23514"}), Answer, ""},
		{"unreadable row", live, fmt.Errorf("get: %w", repository.ErrUnreadable), Answer, ""},
		{"change log incomplete", live, fmt.Errorf("read changes: %w: trigger disabled", repository.ErrChangeLogIncomplete), Answer, ""},
		{"cursor expired", live, fmt.Errorf("read changes: %w", repository.ErrCursorExpired), Answer, ""},
		{"raw scan error that reads like EOF", live, fmt.Errorf("get: %w", pgx.ScanArgError{ColumnIndex: 5, Err: io.ErrUnexpectedEOF}), Answer, ""},
		{"business error after caller canceled", canceled, repository.ErrNotFound, Answer, ""},
		{"caller canceled", canceled, context.Canceled, Canceled, ""},
		{"caller deadline", canceled, fmt.Errorf("q: %w", context.DeadlineExceeded), Canceled, ""},
		{"outage error after caller canceled", canceled, opErr(syscall.ECONNREFUSED), Canceled, ""},
		{"our PrimaryTimeout", live, fmt.Errorf("q: %w", context.DeadlineExceeded), Outage, FailTimeout},
		{"connect error", live, &pgconn.ConnectError{}, Outage, FailConnect},
		{"connection refused", live, opErr(syscall.ECONNREFUSED), Outage, FailConnect},
		{"connection reset", live, fmt.Errorf("read: %w", syscall.ECONNRESET), Outage, FailConnection},
		{"broken pipe", live, fmt.Errorf("write: %w", syscall.EPIPE), Outage, FailConnection},
		{"unexpected EOF", live, fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), Outage, FailConnection},
		{"net timeout", live, fmt.Errorf("read: %w", timeoutErr{}), Outage, FailTimeout},
		{"net error", live, &net.OpError{Op: "read", Err: errors.New("weird")}, Outage, FailConnection},
		{"SQLSTATE 08006", live, pg("08006"), Outage, FailConnection},
		{"SQLSTATE 08001", live, pg("08001"), Outage, FailConnection},
		{"SQLSTATE 57P01 admin shutdown", live, pg("57P01"), Outage, FailShutdown},
		{"SQLSTATE 57P02 crash shutdown", live, pg("57P02"), Outage, FailShutdown},
		{"SQLSTATE 57P03 cannot connect now", live, pg("57P03"), Outage, FailShutdown},
		{"SQLSTATE 57P04 database dropped", live, pg("57P04"), Outage, FailShutdown},
		{"SQLSTATE 57P05 idle session timeout", live, pg("57P05"), Outage, FailShutdown},
		{"SQLSTATE 57014 statement timeout", live, pg("57014"), Outage, FailTimeout},
		{"SQLSTATE 53300 too many connections", live, pg("53300"), Outage, FailOverload},
		{"SQLSTATE 25006 read-only server", live, pg("25006"), ReadOnly, FailReadOnly},
		{"SQLSTATE 22001 data exception", live, pg("22001"), Answer, ""},
		{"SQLSTATE 23505 unique violation", live, pg("23505"), Answer, ""},
		{"SQLSTATE 40001 serialization failure", live, pg("40001"), Answer, ""},
		{"SQLSTATE 40P01 deadlock", live, pg("40P01"), Answer, ""},
		{"SQLSTATE 42P01 undefined table", live, pg("42P01"), Answer, ""},
		{"SQLSTATE 42501 insufficient privilege", live, pg("42501"), Answer, ""},
		{"SQLSTATE 53100 disk full", live, pg("53100"), ReadOnly, FailDiskFull},
		{"primary reports unavailable", live, fmt.Errorf("x: %w", repository.ErrUnavailable), Outage, FailUnavailable},
		{"unrecognised error", live, errors.New("something odd"), Outage, FailUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			class, kind := Classify(tc.ctx, tc.err)
			if class != tc.class || kind != tc.kind {
				t.Fatalf("Classify(%v) = %v/%q, want %v/%q", tc.err, class, kind, tc.class, tc.kind)
			}
		})
	}
}
