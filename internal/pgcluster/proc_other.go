//go:build !unix

package pgcluster

import "os/exec"

// apply is a no-op where switching users is not supported; lookupServerUser
// never returns a user on such systems because os.Geteuid is -1 there.
func (u *serverUser) apply(cmd *exec.Cmd) {}
