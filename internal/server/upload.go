package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nardecode"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
)

// Uploads receives what `nix copy --to http://…` sends (package upload).
type Uploads interface {
	PutNAR(ctx context.Context, name string, body io.Reader) (n int64, exists bool, err error)
	PutNarInfo(ctx context.Context, hash string, body []byte) (exists bool, err error)
	PutAux(ctx context.Context, kind, key string, body []byte) error
}

// UploadConfig turns uploads on. Zero values mean defaults.
type UploadConfig struct {
	Uploads Uploads
	// Token is the write token: the HTTP Basic password (any login) or
	// Bearer token every PUT must carry.
	Token string
	// MaxNARSize bounds one uploaded NAR file; default 64 GiB.
	MaxNARSize int64
	// StallTimeout fails an upload that sends no byte for this long;
	// default 60s.
	StallTimeout time.Duration
}

// Limits of the small uploads, which are read whole into memory.
const (
	maxNarInfoUpload = 1 << 20
	maxAuxUpload     = 64 << 20
)

// mountUploads adds the PUT routes Nix's HTTP binary-cache store uses.
func (s *Server) mountUploads(r chi.Router, cfg *UploadConfig) {
	if cfg == nil || cfg.Uploads == nil {
		off := s.handle("upload", func(http.ResponseWriter, *http.Request) error { return errUploadsOff })
		for _, p := range []string{"/nar/{file}", "/{file}", "/log/{name}", "/realisations/{file}", "/build-trace-v2/{drv}/{file}"} {
			r.Put(p, off)
		}
		return
	}
	if cfg.MaxNARSize == 0 {
		cfg.MaxNARSize = 64 << 30
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = time.Minute
	}
	u := &uploadRoutes{cfg: *cfg, token: sha256.Sum256([]byte(cfg.Token))}
	r.Put("/nar/{file}", s.handle("upload", u.authorized(u.putNAR)))
	r.Put("/{file}", s.handle("upload", u.authorized(u.putTopLevel)))
	r.Put("/log/{name}", s.handle("upload", u.authorized(u.putLog)))
	r.Put("/realisations/{file}", s.handle("upload", u.authorized(u.putRealisation)))
	r.Put("/build-trace-v2/{drv}/{file}", s.handle("upload", u.authorized(u.putBuildTrace)))
}

type uploadRoutes struct {
	cfg   UploadConfig
	token [32]byte
}

// authorized lets a request through only with the write token, compared in
// constant time (of hashes, so not even its length leaks).
func (u *uploadRoutes) authorized(h func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var given string
		if _, pass, ok := r.BasicAuth(); ok {
			given = pass
		} else if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
			given = strings.TrimSpace(tok)
		} else {
			return errNoCredentials
		}
		sum := sha256.Sum256([]byte(given))
		if subtle.ConstantTimeCompare(sum[:], u.token[:]) != 1 {
			return errBadCredentials
		}
		return h(w, r)
	}
}

func (u *uploadRoutes) putNAR(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "file")
	if !narinfo.ValidNARName(name) {
		return errBadName
	}
	body := u.body(w, r, u.cfg.MaxNARSize)
	if r.Header.Get("Content-Encoding") != "" {
		return fmt.Errorf("%w: a NAR is uploaded as its file, without Content-Encoding", upload.ErrRejected)
	}
	_, exists, err := u.cfg.Uploads.PutNAR(r.Context(), name, body)
	if err != nil {
		return err
	}
	return created(w, exists)
}

// putTopLevel takes /<hash>.narinfo and /<hash>.ls.
func (u *uploadRoutes) putTopLevel(w http.ResponseWriter, r *http.Request) error {
	file := chi.URLParam(r, "file")
	if hash, ok := strings.CutSuffix(file, ".narinfo"); ok && narinfo.ValidHash(hash) {
		body, err := u.readSmall(w, r, maxNarInfoUpload)
		if err != nil {
			return err
		}
		exists, err := u.cfg.Uploads.PutNarInfo(r.Context(), hash, body)
		if err != nil {
			return err
		}
		return created(w, exists)
	}
	if hash, ok := strings.CutSuffix(file, ".ls"); ok && narinfo.ValidHash(hash) {
		return u.putAux(w, r, "ls", file)
	}
	return errBadName
}

func (u *uploadRoutes) putLog(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "name")
	if !narinfo.ValidStorePathName(name) {
		return errBadName
	}
	return u.putAux(w, r, "log", "log/"+name)
}

func (u *uploadRoutes) putRealisation(w http.ResponseWriter, r *http.Request) error {
	file := chi.URLParam(r, "file")
	if !validRealisationName(file) {
		return errBadName
	}
	return u.putAux(w, r, "realisation", "realisations/"+file)
}

func (u *uploadRoutes) putBuildTrace(w http.ResponseWriter, r *http.Request) error {
	drv, file := chi.URLParam(r, "drv"), chi.URLParam(r, "file")
	if !narinfo.ValidStorePathName(drv) || !validRealisationName(file) {
		return errBadName
	}
	return u.putAux(w, r, "realisation", "build-trace-v2/"+drv+"/"+file)
}

func (u *uploadRoutes) putAux(w http.ResponseWriter, r *http.Request, kind, key string) error {
	body, err := u.readSmall(w, r, maxAuxUpload)
	if err != nil {
		return err
	}
	if err := u.cfg.Uploads.PutAux(r.Context(), kind, key, body); err != nil {
		return err
	}
	return created(w, false)
}

// readSmall reads a whole small body, undoing the Content-Encoding newer
// Nix may put on it (narinfo-compression, ls-compression, log-compression).
func (u *uploadRoutes) readSmall(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	var body io.Reader = u.body(w, r, limit)
	if enc := r.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		if enc == "bzip2" || !nardecode.Supported(enc) {
			return nil, fmt.Errorf("%w: Content-Encoding %q (the proxy decodes zstd, xz, gzip)", upload.ErrUnsupported, enc)
		}
		d, err := nardecode.NewReader(body, enc)
		if err != nil {
			return nil, fmt.Errorf("%w: Content-Encoding %s: %v", upload.ErrRejected, enc, err)
		}
		defer d.Close()
		body = io.LimitReader(d, limit+1)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: body: %v", upload.ErrRejected, err)
	}
	if int64(len(b)) > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return b, nil
}

// body bounds r's body in size, and in time between bytes: a client that
// stops sending is cut off after StallTimeout, not held forever.
func (u *uploadRoutes) body(w http.ResponseWriter, r *http.Request, limit int64) io.Reader {
	return &stallReader{r: http.MaxBytesReader(w, r.Body, limit), rc: http.NewResponseController(w), stall: u.cfg.StallTimeout}
}

type stallReader struct {
	r     io.Reader
	rc    *http.ResponseController
	stall time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	// Not supported only by test writers; then the server's own timeouts rule.
	_ = s.rc.SetReadDeadline(time.Now().Add(s.stall))
	return s.r.Read(p)
}

// created answers a write: 201 when something was stored, 200 when it was
// there already. Nix accepts both.
func created(w http.ResponseWriter, exists bool) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if exists {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "already present\n")
		return nil
	}
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, "stored\n")
	return nil
}

// validRealisationName accepts a realisation's file name as Nix writes it,
// "<sha256:hex>!<output>.doi" or "<output>.doi": no slashes, no dot-dot.
func validRealisationName(s string) bool {
	if !strings.HasSuffix(s, ".doi") || len(s) > 256 || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!:+-._", c) >= 0) {
			return false
		}
	}
	return true
}
