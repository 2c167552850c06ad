package isolate

// The warm pool keeps Options.WarmWorkers workers started, jailed and
// waiting. A worker may also be given, while it waits, the module the next
// job will probably run — the one the last job ran — which it compiles (in
// practice: loads from the compilation cache) off the critical path; a job
// for that module then skips its compilation and is sent without its bytes.
//
// A worker never holds another program than the one it runs: a job goes to
// a worker preloaded with its own module, else to a blank one; a worker
// preloaded with another module is discarded rather than used. To keep
// jobs for other modules warm, a refill preloads only while at least one
// other pooled worker stays blank, or when the last two jobs ran the same
// module (then a single-worker pool preloads too).

// moduleHint is a module to preload: a copy of the bytes (the caller of Run
// may reuse its slice) and their hash.
type moduleHint struct {
	sum    [32]byte
	module []byte
	det    bool // the last job was deterministic
}

// get returns a pooled worker for jb if one fits (warm is true), or starts
// one, and refills the pool for what it took.
func (j *jailer) get(jb *job) (w *worker, warm bool, err error) {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil, false, ErrClosed
	}
	// A sealed module is never a hint: the parent does not hold its
	// plaintext, and no worker is ever preloaded with it for another job.
	repeat := !jb.Sealed && j.hasLast && j.lastSum == jb.ModuleSHA256
	if !jb.Sealed {
		j.lastSum, j.hasLast = jb.ModuleSHA256, true
		if j.warm > 0 && (j.hint == nil || j.hint.sum != jb.ModuleSHA256 || j.hint.det != jb.Deterministic) {
			j.hint = &moduleHint{sum: jb.ModuleSHA256, module: append([]byte(nil), jb.Module...), det: jb.Deterministic}
		}
	}
	pick, blank := -1, -1
	for i, p := range j.pool {
		if !jb.Sealed && p.preload != nil && p.preload.sum == jb.ModuleSHA256 {
			pick = i
			break
		}
		if p.preload == nil && blank < 0 {
			blank = i
		}
	}
	var discard *worker
	switch {
	case pick >= 0:
	case blank >= 0:
		pick = blank
		j.blanks--
	case len(j.pool) > 0:
		// Only workers holding other modules: this job must not run
		// in one of them. Discard the oldest; this job starts cold.
		discard = j.pool[0]
		j.pool = j.pool[1:]
	}
	if pick >= 0 {
		w = j.pool[pick]
		j.pool = append(j.pool[:pick], j.pool[pick+1:]...)
	}
	j.mu.Unlock()

	if discard != nil {
		go j.reap(discard)
		j.refill(repeat)
	}
	if w != nil {
		j.refill(repeat)
		return w, true, nil
	}
	w, err = j.spawn(nil)
	return w, false, err
}

// refill starts one worker for the pool in the background, preloaded with
// the last job's module when the policy above allows.
func (j *jailer) refill(repeat bool) {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return
	}
	preload := j.hint
	if preload != nil && j.blanks == 0 && !repeat {
		preload = nil
	}
	if preload == nil {
		j.blanks++
	}
	j.wg.Add(1)
	j.mu.Unlock()
	go func() {
		defer j.wg.Done()
		w, err := j.spawn(preload)
		// Under mu, so that Close either takes this worker from the
		// pool or this goroutine sees Close.
		j.mu.Lock()
		if err == nil && !j.closed && len(j.pool) < j.warm {
			j.pool = append(j.pool, w)
			j.mu.Unlock()
			return
		}
		if preload == nil {
			j.blanks--
		}
		j.mu.Unlock()
		if err == nil {
			j.reap(w)
		}
		// On a spawn error, the next run starts a worker itself and
		// reports the error.
	}()
}

// pooled returns how many workers wait in the pool.
func (j *jailer) pooled() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.pool)
}
