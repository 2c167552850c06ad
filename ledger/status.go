package ledger

type statusJSON struct {
	ChainID        string  `json:"chain_id"`
	Height         int64   `json:"height"`
	Size           uint64  `json:"size"`
	Root           []byte  `json:"root"`
	CheckpointSize *uint64 `json:"checkpoint_size"`
}
