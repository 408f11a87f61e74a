package verify

import (
	"context"
	"io/fs"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// uploadedAdvice is what to do about a bad NAR that was uploaded.
const uploadedAdvice = "it was uploaded, so no upstream can fetch it again: remove the path " +
	"(nix-cache-proxy delete, after unpin if it is pinned) and upload it again"

// uploaded reports whether e's NAR came by upload: nothing can fetch it
// again.
func uploaded(e store.NAREntry) bool { return e.HasSource && !e.Source.Refillable() }

// drop drops a bad NAR (checked is the file as read, nil when missing) and,
// when the cache must keep it (pinned or kept, with their closures), fetches
// it again from its upstream at once: a pinned closure is never left with
// a hole until someone asks. A refetch that fails leaves the problem
// unrepaired, so verify exits non-zero.
func (p *pass) drop(ctx context.Context, pr *Problem, name string, checked fs.FileInfo) {
	err := p.st.DropNAR(ctx, name, checked)
	p.repaired(pr, err, "dropped")
	if err != nil || p.refetch == nil || p.protect == nil {
		return
	}
	if p.protected == nil {
		prot, err := p.protect(ctx)
		if err != nil {
			pr.Repaired, pr.RepairError = false, "dropped, but could not tell whether it is pinned or kept: "+err.Error()
			return
		}
		p.protected = prot
	}
	if !p.protected[name] {
		return
	}
	if err := p.refetch(ctx, name); err != nil {
		pr.Repaired = false
		pr.RepairError = "dropped, and it is pinned or kept, but fetching it again failed: " + err.Error() +
			" (`nix-cache-proxy prefetch` it once its upstream has it)"
		return
	}
	pr.Detail = strings.TrimSuffix(pr.Detail, " (dropped)") + " (dropped and fetched again from its upstream: it is pinned or kept)"
}
