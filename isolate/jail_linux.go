package isolate

import (
	"context"
	"os"
)

const workerEnv = "CLOISTER_ISOLATE_WORKER"

// jailer starts and drives jailed workers.
type jailer struct{ local *executor }

func newJailer(_ context.Context, _ string, _ int) (*jailer, error) {
	return &jailer{local: &executor{}}, nil
}

func (j *jailer) close() error { return nil }

func (j *jailer) run(ctx context.Context, jb *job) (*Result, error) {
	jb.Cancel = true
	ctx, cancel := context.WithTimeout(ctx, jb.Timeout)
	defer cancel()
	res, err := j.local.execute(ctx, jb)
	if err != nil {
		return nil, err
	}
	res.Report.Missing = map[string]string{"worker": "jailed worker not yet available in this build"}
	return res, nil
}

// IsWorker reports whether this process was started as a jailed worker.
func IsWorker() bool { return os.Getenv(workerEnv) != "" }

// WorkerMain is the worker's main function; it returns the exit status.
func WorkerMain() int { return 2 }
