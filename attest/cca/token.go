package cca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/cloisterhq/cloister/attest"
)

// CBOR tags and map keys of the CCA attestation token (Arm CCA Security
// Model / RMM specification, and its earlier 399 encoding).
const (
	TagCollection       = 907
	TagCollectionLegacy = 399
	keyPlatformToken    = 44234
	keyRealmToken       = 44241
	contentFormatCWT    = 263 // CoAP content format of a tagged COSE_Sign1 token

	claimChallenge        = 10
	claimProfile          = 265
	claimImplementationID = 2396
	claimInstanceID       = 256
	claimConfig           = 2401
	claimLifecycle        = 2395
	claimHashAlgID        = 2402
	claimSWComponents     = 2399
	claimVerificationSvc  = 2400

	claimRealmPersonalization = 44235
	claimRealmHashAlgID       = 44236
	claimRAKPub               = 44237
	claimRIM                  = 44238
	claimREMs                 = 44239
	claimRAKHashAlgID         = 44240
)

const maxTokenSize = 64 << 10

var decMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  12,
		MaxArrayElements: 256,
		MaxMapPairs:      256,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// SWComponent is one measured platform software component.
type SWComponent struct {
	Type        string `cbor:"1,keyasint,omitempty"`
	Measurement []byte `cbor:"2,keyasint"`
	Version     string `cbor:"4,keyasint,omitempty"`
	SignerID    []byte `cbor:"5,keyasint"`
	HashAlgID   string `cbor:"6,keyasint,omitempty"`
}

// PlatformClaims are the CCA platform token's claims.
type PlatformClaims struct {
	Profile             string        `cbor:"265,keyasint"`
	Challenge           []byte        `cbor:"10,keyasint"`
	ImplementationID    []byte        `cbor:"2396,keyasint"`
	InstanceID          []byte        `cbor:"256,keyasint"`
	Config              []byte        `cbor:"2401,keyasint"`
	Lifecycle           uint64        `cbor:"2395,keyasint"`
	HashAlgID           string        `cbor:"2402,keyasint"`
	SWComponents        []SWComponent `cbor:"2399,keyasint"`
	VerificationService string        `cbor:"2400,keyasint,omitempty"`
}

// RealmClaims are the realm token's claims.
type RealmClaims struct {
	Challenge       []byte   `cbor:"10,keyasint"`
	Personalization []byte   `cbor:"44235,keyasint"`
	HashAlgID       string   `cbor:"44236,keyasint"`
	RAKPub          []byte   `cbor:"44237,keyasint"`
	RIM             []byte   `cbor:"44238,keyasint"`
	REMs            [][]byte `cbor:"44239,keyasint"`
	RAKHashAlgID    string   `cbor:"44240,keyasint"`
}

// Token is a parsed CCA token whose signatures have not been checked.
type Token struct {
	Platform       *cose.Sign1Message
	Realm          *cose.Sign1Message
	PlatformClaims PlatformClaims
	RealmClaims    RealmClaims
	RAK            *ecdsa.PublicKey
}

// Parse decodes a CCA token (tag 907 or 399) and both inner tokens.
func Parse(data []byte) (*Token, error) {
	if len(data) == 0 || len(data) > maxTokenSize {
		return nil, fmt.Errorf("%w: CCA token is %d bytes (1..%d)", attest.ErrMalformed, len(data), maxTokenSize)
	}
	var tag cbor.RawTag
	if err := decMode.Unmarshal(data, &tag); err != nil {
		return nil, fmt.Errorf("%w: CCA token: %v", attest.ErrMalformed, err)
	}
	var coll map[uint64]cbor.RawMessage
	if err := decMode.Unmarshal(tag.Content, &coll); err != nil {
		return nil, fmt.Errorf("%w: CCA token collection: %v", attest.ErrMalformed, err)
	}
	if len(coll) != 2 {
		return nil, fmt.Errorf("%w: CCA collection has %d entries, want platform and realm", attest.ErrMalformed, len(coll))
	}
	get := func(key uint64, name string) ([]byte, error) {
		raw, ok := coll[key]
		if !ok {
			return nil, fmt.Errorf("%w: CCA collection lacks the %s token (%d)", attest.ErrMalformed, name, key)
		}
		switch tag.Number {
		case TagCollection:
			var entry struct {
				_       struct{} `cbor:",toarray"`
				Format  uint64
				Payload []byte
			}
			if err := decMode.Unmarshal(raw, &entry); err != nil {
				return nil, fmt.Errorf("%w: CCA %s entry: %v", attest.ErrMalformed, name, err)
			}
			if entry.Format != contentFormatCWT {
				return nil, fmt.Errorf("%w: CCA %s entry content format %d, want %d", attest.ErrMalformed, name, entry.Format, contentFormatCWT)
			}
			return entry.Payload, nil
		case TagCollectionLegacy:
			var b []byte
			if err := decMode.Unmarshal(raw, &b); err != nil {
				return nil, fmt.Errorf("%w: CCA %s token: %v", attest.ErrMalformed, name, err)
			}
			return b, nil
		}
		return nil, fmt.Errorf("%w: CBOR tag %d is not a CCA token (907 or 399)", attest.ErrMalformed, tag.Number)
	}
	pRaw, err := get(keyPlatformToken, "platform")
	if err != nil {
		return nil, err
	}
	rRaw, err := get(keyRealmToken, "realm")
	if err != nil {
		return nil, err
	}
	t := &Token{}
	if t.Platform, err = parseSign1(pRaw, "platform"); err != nil {
		return nil, err
	}
	if t.Realm, err = parseSign1(rRaw, "realm"); err != nil {
		return nil, err
	}
	if err := decMode.Unmarshal(t.Platform.Payload, &t.PlatformClaims); err != nil {
		return nil, fmt.Errorf("%w: CCA platform claims: %v", attest.ErrMalformed, err)
	}
	if err := decMode.Unmarshal(t.Realm.Payload, &t.RealmClaims); err != nil {
		return nil, fmt.Errorf("%w: CCA realm claims: %v", attest.ErrMalformed, err)
	}
	if err := t.checkShape(); err != nil {
		return nil, err
	}
	return t, nil
}

func parseSign1(b []byte, name string) (*cose.Sign1Message, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: CCA %s token is empty", attest.ErrMalformed, name)
	}
	m := &cose.Sign1Message{}
	var err error
	if b[0] == 0xd2 {
		err = m.UnmarshalCBOR(b)
	} else {
		err = (*cose.UntaggedSign1Message)(m).UnmarshalCBOR(b)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: CCA %s COSE_Sign1: %v", attest.ErrMalformed, name, err)
	}
	return m, nil
}

func (t *Token) checkShape() error {
	p, r := &t.PlatformClaims, &t.RealmClaims
	switch {
	case len(p.Challenge) != 32 && len(p.Challenge) != 48 && len(p.Challenge) != 64:
		return fmt.Errorf("%w: CCA platform challenge is %d bytes", attest.ErrMalformed, len(p.Challenge))
	case len(p.ImplementationID) != 32:
		return fmt.Errorf("%w: CCA implementation id is %d bytes, want 32", attest.ErrMalformed, len(p.ImplementationID))
	case len(p.InstanceID) != 33:
		return fmt.Errorf("%w: CCA instance id is %d bytes, want 33", attest.ErrMalformed, len(p.InstanceID))
	case len(r.Challenge) != 64:
		return fmt.Errorf("%w: CCA realm challenge is %d bytes, want 64", attest.ErrMalformed, len(r.Challenge))
	case len(r.RIM) == 0 || len(r.REMs) != 4:
		return fmt.Errorf("%w: CCA realm has RIM of %d bytes and %d REMs (want 4)", attest.ErrMalformed, len(r.RIM), len(r.REMs))
	case len(r.Personalization) != 64:
		return fmt.Errorf("%w: CCA realm personalization value is %d bytes, want 64", attest.ErrMalformed, len(r.Personalization))
	}
	rak, err := parseRAK(r.RAKPub)
	if err != nil {
		return err
	}
	t.RAK = rak
	return nil
}

// parseRAK reads the RAK: an uncompressed P-384 point (earlier tokens) or
// a COSE_Key (RMM 1.0).
func parseRAK(b []byte) (*ecdsa.PublicKey, error) {
	if len(b) == 97 && b[0] == 4 {
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P384(), b)
		if err != nil {
			return nil, fmt.Errorf("%w: CCA RAK point: %v", attest.ErrMalformed, err)
		}
		return k, nil
	}
	if len(b) > 0 && b[0]>>5 == 5 { // CBOR map: COSE_Key
		var ck cose.Key
		if err := ck.UnmarshalCBOR(b); err != nil {
			return nil, fmt.Errorf("%w: CCA RAK COSE_Key: %v", attest.ErrMalformed, err)
		}
		pk, err := ck.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("%w: CCA RAK COSE_Key: %v", attest.ErrMalformed, err)
		}
		if ek, ok := pk.(*ecdsa.PublicKey); ok {
			return ek, nil
		}
		return nil, fmt.Errorf("%w: CCA RAK is a %T, want ECDSA", attest.ErrMalformed, pk)
	}
	return nil, fmt.Errorf("%w: CCA RAK of %d bytes is neither a P-384 point nor a COSE_Key", attest.ErrMalformed, len(b))
}
