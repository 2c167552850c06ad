package all

import (
	_ "github.com/cloisterhq/cloister/attest/cca"
	_ "github.com/cloisterhq/cloister/attest/ear"
	_ "github.com/cloisterhq/cloister/attest/nitro"
	_ "github.com/cloisterhq/cloister/attest/ratls"
	_ "github.com/cloisterhq/cloister/attest/sevsnp"
	_ "github.com/cloisterhq/cloister/attest/sgx"
	_ "github.com/cloisterhq/cloister/attest/software"
	_ "github.com/cloisterhq/cloister/attest/tdx"
	_ "github.com/cloisterhq/cloister/attest/tpm"
)
