// Package trustroot derives the trust root of a ledger validator's state
// sync (ledger.StateSync: a block height and its header hash) from the
// chain's pinned genesis hash, so that a joining validator takes no header
// hash from anyone: it follows the validator-set changes from the genesis
// as ledger/client does (each change verified under the set before it),
// then takes a validator's latest header only if that header's validator
// set is the followed one and validators holding more than 2/3 of its
// power signed it (decision 0156).
package trustroot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	cmtproto "github.com/cometbft/cometbft/api/cometbft/types/v1"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// maxAnswer bounds the light block answer read from a validator.
const maxAnswer = 1 << 20

// FromGenesis returns the height and hash of the latest header of the
// validator at apiURL, checked against the validator set followed from
// the genesis with hash genesisHash. A validator-set change in between
// makes it fail; try again.
func FromGenesis(ctx context.Context, apiURL, genesisHash string) (int64, []byte, error) {
	c, err := client.New(apiURL, client.WithGenesis(genesisHash))
	if err != nil {
		return 0, nil, err
	}
	m, err := c.FollowGenesis(ctx, genesisHash)
	if err != nil {
		return 0, nil, fmt.Errorf("trust root: following the validator set from the genesis: %w", err)
	}
	lb, err := latest(ctx, apiURL)
	if err != nil {
		return 0, nil, fmt.Errorf("trust root: the latest header: %w", err)
	}
	if err := lb.ValidateBasic(m.Set.ChainID); err != nil {
		return 0, nil, fmt.Errorf("trust root: header %d: %w", lb.Height, err)
	}
	if len(lb.ValidatorSet.Validators) != len(m.Set.Validators) {
		return 0, nil, fmt.Errorf("trust root: header %d has %d validators, the set followed from the genesis %d", lb.Height, len(lb.ValidatorSet.Validators), len(m.Set.Validators))
	}
	for _, v := range m.Set.Validators {
		pub, err := v.PublicKey()
		if err != nil {
			return 0, nil, err
		}
		_, hv := lb.ValidatorSet.GetByAddress(verify.ValidatorAddress(pub))
		if hv == nil || hv.VotingPower != v.Power || !bytes.Equal(hv.PubKey.Bytes(), pub) {
			return 0, nil, fmt.Errorf("trust root: header %d's validator set is not the one followed from the genesis", lb.Height)
		}
	}
	if err := lb.ValidatorSet.VerifyCommitLight(m.Set.ChainID, lb.Commit.BlockID, lb.Height, lb.Commit); err != nil {
		return 0, nil, fmt.Errorf("trust root: header %d: %w", lb.Height, err)
	}
	return lb.Height, lb.Hash(), nil
}

// latest fetches GET /v1/light/0.
func latest(ctx context.Context, apiURL string) (*cmttypes.LightBlock, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(apiURL, "/")+"/v1/light/0", nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer+1))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK || len(body) > maxAnswer {
		return nil, fmt.Errorf("GET /v1/light/0: status %d, %d bytes", res.StatusCode, len(body))
	}
	var lj struct {
		LightBlock []byte `json:"light_block"`
	}
	if err := json.Unmarshal(body, &lj); err != nil {
		return nil, err
	}
	var pb cmtproto.LightBlock
	if err := pb.Unmarshal(lj.LightBlock); err != nil {
		return nil, err
	}
	lb, err := cmttypes.LightBlockFromProto(&pb)
	if lb == nil && err == nil {
		err = errors.New("empty light block")
	}
	return lb, err
}
