package narinfo

import "errors"

// Sentinel errors of the package; match them with errors.Is.
var (
	// ErrInvalid is wrapped by every error Parse returns.
	ErrInvalid = errors.New("narinfo: invalid")
	// ErrUntrusted means a narinfo carries no valid signature by a trusted key.
	ErrUntrusted = errors.New("narinfo: no valid signature by a trusted key")
	// ErrBadKey means a key file does not hold a key in Nix's format.
	ErrBadKey = errors.New("narinfo: not a Nix signing key")
)
