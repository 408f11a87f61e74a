package verify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// pageSize is how many index rows one read transaction hands out.
const pageSize = 256

// pass is one run over a cache dir.
type pass struct {
	st  Store
	req Request
	j   *job
	log *slog.Logger
	// protect and refetch: Options.Protected and Options.Refetch;
	// protected is protect's answer, asked once a repair needs it.
	protect   func(ctx context.Context) (map[string]bool, error)
	refetch   func(ctx context.Context, name string) error
	protected map[string]bool
}

// report records a bad entry and logs it as it is found.
func (p *pass) report(pr Problem) {
	p.log.Warn("verify: bad entry", "job", p.j.st.ID, "name", pr.Name, "kind", pr.Kind, "detail", pr.Detail,
		"repaired", pr.Repaired, "repair_error", pr.RepairError)
	p.j.problem(pr)
}

// run checks the index, then every indexed NAR file, then looks for files
// that should not be there. It returns an error only when it could not go
// on; everything bad it finds is a problem in the job.
func (p *pass) run(ctx context.Context) error {
	stats, err := p.st.Stats(ctx)
	if err != nil {
		return err
	}
	p.j.update(func(s *Status) { s.Files, s.BytesTotal = int(stats.NARs), stats.NARBytes })
	faults, err := p.st.CheckIndex(ctx)
	if err != nil {
		return fmt.Errorf("check index: %w", err)
	}
	var derived []Problem
	for _, f := range faults {
		if errors.Is(f, store.ErrDerived) {
			derived = append(derived, Problem{Name: "index.db", Kind: KindIndex, Detail: f.Error()})
			continue
		}
		// bbolt's faults cannot be mended here: copy the NAR files
		// elsewhere, or start over with an empty cache dir.
		p.report(Problem{Name: "index.db", Kind: KindIndex, Detail: f.Error(), RepairError: "not repairable in place"})
	}
	if len(derived) > 0 && p.req.Repair {
		// Rebuilt from the NAR rows, which are the truth.
		err := p.st.RebuildNAROrder(ctx)
		for i := range derived {
			derived[i].Repaired = err == nil
			if err != nil {
				derived[i].RepairError = err.Error()
			}
		}
	}
	for _, pr := range derived {
		p.report(pr)
	}
	after := ""
	for {
		page, err := p.st.NAREntries(ctx, after, pageSize)
		if err != nil {
			return fmt.Errorf("read index: %w", err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if err := p.entry(ctx, e); err != nil {
				return err
			}
			after = e.Name
		}
	}
	return p.st.Strays(ctx, narinfo.ValidNARName, func(s store.Stray) error {
		p.stray(ctx, s)
		return nil
	})
}

// entry checks one indexed NAR file.
func (p *pass) entry(ctx context.Context, e store.NAREntry) error {
	defer p.j.update(func(s *Status) { s.FilesDone++ })
	f, err := p.st.OpenNARFile(e.Name)
	if errors.Is(err, fs.ErrNotExist) {
		p.missing(ctx, e)
		return ctx.Err()
	}
	if err != nil {
		p.report(Problem{Name: e.Name, Kind: KindMissing, Detail: "cannot open: " + err.Error(), RepairError: "not removable: it cannot be opened"})
		return ctx.Err()
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", e.Name, err)
	}
	c, err := checkNAR(ctx, f, info.Size(), e, p.req.Deep, p.j.addBytes)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		// An I/O error reading the file: as bad as wrong bytes.
		c.findings = append(c.findings, finding{KindHash, "read failed: " + err.Error()})
	}
	if c.notDeep {
		p.j.update(func(s *Status) { s.NotDeep++ })
	}
	if e.Err != nil {
		c.findings = append([]finding{{KindIndex, e.Err.Error()}}, c.findings...)
	}
	if len(c.findings) == 0 {
		return nil
	}
	details := make([]string, len(c.findings))
	for i, f := range c.findings {
		details[i] = f.detail
	}
	pr := Problem{Name: e.Name, Kind: c.findings[0].kind, Detail: strings.Join(details, "; ")}
	if uploaded(e) {
		// Dropping it would leave a narinfo whose NAR nothing can
		// fetch, and which keeps `nix copy --to` from uploading it again.
		pr.Detail += "; " + uploadedAdvice
		if p.req.Repair {
			pr.RepairError = "not dropped: it was uploaded, so no upstream has it to fetch again"
		}
	} else if p.req.Repair {
		p.drop(ctx, &pr, e.Name, info)
	}
	p.report(pr)
	return nil
}

// missing reports an index row whose file is gone, once it has made sure
// the row is still there (eviction may be removing both right now).
func (p *pass) missing(ctx context.Context, e store.NAREntry) {
	if ok, err := p.st.NARIndexed(ctx, e.Name); err == nil && !ok {
		return
	}
	pr := Problem{Name: e.Name, Kind: KindMissing, Detail: "indexed, but its file is missing"}
	if uploaded(e) {
		pr.Detail += "; " + uploadedAdvice
	}
	if p.req.Repair {
		if !uploaded(e) {
			p.drop(ctx, &pr, e.Name, nil)
		} else if p.repaired(&pr, p.st.DropNAR(ctx, e.Name, nil), "row dropped"); pr.Repaired {
			// The index is right again, but the path is not whole.
			pr.Repaired, pr.RepairError = false, "it was uploaded, so no upstream has it to fetch again"
		}
	}
	p.report(pr)
}

func (p *pass) stray(ctx context.Context, s store.Stray) {
	pr := Problem{Name: s.Path}
	switch s.Kind {
	case store.StrayUnindexed:
		pr.Kind, pr.Detail = KindUnindexed, fmt.Sprintf("a NAR file (%d bytes) no index row names", s.Size)
	case store.StrayTemp:
		pr.Kind, pr.Detail = KindTemp, fmt.Sprintf("a temp file (%d bytes) no download is writing", s.Size)
	default:
		pr.Kind, pr.Detail = KindStray, "not a NAR file name in its shard directory"
	}
	if p.req.Repair {
		p.repaired(&pr, p.st.RemoveStray(ctx, s), "removed")
	}
	p.report(pr)
}

// repaired records how a repair went. An entry that changed since it was
// checked is no longer the bad one: a fresh download (checked as it came
// in) replaced it, or it went away by itself.
func (p *pass) repaired(pr *Problem, err error, did string) {
	switch {
	case err == nil:
		pr.Repaired = true
		pr.Detail += " (" + did + ")"
	case errors.Is(err, store.ErrChanged):
		pr.Repaired = true
		pr.Detail += " (changed meanwhile, left alone: " + err.Error() + ")"
	case errors.Is(err, store.ErrBusy):
		pr.RepairError = "a download is writing it now; verify again later"
	default:
		pr.RepairError = err.Error()
	}
}
