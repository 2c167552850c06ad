package ledger

type statusJSON struct {
	ChainID        string  `json:"chain_id"`
	Height         int64   `json:"height"`
	Size           uint64  `json:"size"`
	Root           []byte  `json:"root"`
	CheckpointSize *uint64 `json:"checkpoint_size"`
	// RulesVersion is the rule version that judges the next block; Rules
	// the whole schedule, including versions scheduled for later heights.
	RulesVersion int          `json:"rules_version,omitempty"`
	Rules        ruleSchedule `json:"rules,omitempty"`
}

// withRules adds the rule schedule to a status of committed height h.
func (s statusJSON) withRules(sched ruleSchedule, h int64) statusJSON {
	if sched != nil {
		s.Rules, s.RulesVersion = sched, sched.at(h+1)
	}
	return s
}
