package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

// envPrefix prefixes the environment variable of every flag:
// --negative-ttl is NIX_CACHE_PROXY_NEGATIVE_TTL.
const envPrefix = "NIX_CACHE_PROXY_"

const (
	defaultUpstream = "https://cache.nixos.org"
	defaultKey      = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
)

// serveConfig is everything `serve` is told, from flags, environment and
// config file, in that order of precedence.
type serveConfig struct {
	listen              string
	cacheDir            string
	storage             string
	advertiseURL        string
	fillLeaseTTL        time.Duration
	upstreams           stringList
	keys                stringList
	verifySignatures    bool
	netrcFile           string
	priority            int
	negativeTTL         time.Duration
	pruneAfter          time.Duration
	upstreamErrorStatus int
	upstreamTimeout     time.Duration
	upstreamFailures    int
	upstreamBackoffMax  time.Duration
	upstreamStraggle    time.Duration
	shutdownTimeout     time.Duration
	logLevel            string
	logFormat           string
	adminToken          string
	adminTokenFile      string
	missLogMax          int
	missRecheck         time.Duration
	missRecheckMax      time.Duration
	pins                stringList
	prefetchConcurrency int
	fetchConnections    int
	recompress          string
	metricsListen       string
	pprofListen         string
	minFree             int64
	writeTokenFile      string
	secretKeyFile       string
	uploadMaxSize       int64
	maxConnections      int
	writeStallTimeout   time.Duration
	advertiseMDNS       bool

	// Set by check from the files named above.
	writeToken string
	secretKey  *narinfo.SecretKey

	maxSize       int64
	keepLatest    stringList
	evictGrace    time.Duration
	fleetInterval time.Duration
	keepRules     []evict.Rule // set by check from keepLatest
	evictUploads  bool

	// warms are the config file's [[warm]] tables: flakes the server
	// follows (no flag: a list of tables).
	warms []warm.Watch
}

func newServeFlags(name string, cfg *serveConfig) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("config", "", "TOML config `file`, in sections ([disk] max-size = \"200GiB\"): see docs/configuration.md")
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:5575", "`address` to serve on; 0.0.0.0:5575 for the LAN")
	fs.StringVar(&cfg.cacheDir, "cache-dir", defaultCacheDir(), "`directory` for NAR files and the index")
	fs.BoolVar(&cfg.advertiseMDNS, "advertise-mdns", false, "advertise the cache on the LAN over DNS-SD/Bonjour (_nix-cache._tcp, with its public keys), for relays that discover caches (docs/relay.md); needs a --listen the LAN reaches")
	fs.StringVar(&cfg.advertiseURL, "advertise-url", "", "`URL` where the other proxies on the same --storage bucket reach this one to join its downloads (http://10.0.0.5:5575)")
	fs.DurationVar(&cfg.fillLeaseTTL, "fill-lease-ttl", 30*time.Second, "with s3 storage, how long a download's lease lives unrenewed: how long a dead proxy holds up a NAR before another takes it over")
	fs.DurationVar(&cfg.evictGrace, "evict-grace", time.Hour, "with s3 storage and --max-size, how long a NAR marked for eviction stays in the bucket before it is deleted, unless a proxy serves it meanwhile; longer than the longest download, and than --fill-lease-ttl")
	fs.DurationVar(&cfg.fleetInterval, "fleet-interval", time.Minute, "with s3 storage, how often each proxy publishes the NARs it served to the bucket and, with --max-size, tries the fleet's eviction lease")
	fs.StringVar(&cfg.storage, "storage", "", "where NAR files and narinfos live: the cache dir (default), or the `URL` of an S3 bucket shared by several proxies, s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&scheme=http&region=R (the index stays in the cache dir)")
	cfg.upstreams = stringList{values: []string{defaultUpstream}}
	fs.Var(&cfg.upstreams, "upstream", "upstream cache `URL`, repeatable, in priority order")
	cfg.keys = stringList{values: []string{defaultKey}}
	fs.Var(&cfg.keys, "trusted-public-key", "`NAME:BASE64` key whose signature makes an upstream narinfo trusted, repeatable")
	fs.BoolVar(&cfg.verifySignatures, "verify-signatures", true, "refuse upstream narinfos not signed by a trusted key")
	fs.StringVar(&cfg.netrcFile, "netrc-file", "", "netrc `file` with upstream credentials, as Nix's netrc-file")
	fs.IntVar(&cfg.priority, "priority", 30, "the Priority advertised in nix-cache-info (lower is preferred)")
	fs.DurationVar(&cfg.negativeTTL, "negative-ttl", time.Minute, "how long a path no upstream has is remembered as missing (0 turns it off)")
	fs.IntVar(&cfg.upstreamErrorStatus, "upstream-error-status", 404, "`status` for a lookup failed by upstream errors: 404 lets Nix move on, 502 shows the failure")
	fs.DurationVar(&cfg.upstreamTimeout, "upstream-timeout", 10*time.Second, "bound for an upstream narinfo request or a NAR's response headers")
	fs.IntVar(&cfg.upstreamFailures, "upstream-failure-threshold", 3, "upstream requests failing in a row (timeouts, connection errors, 5xx) after which that upstream is skipped until a probe or trial finds it back")
	fs.DurationVar(&cfg.upstreamStraggle, "upstream-straggle", time.Second, "once every other upstream has answered a lookup, how long after asking it an upstream may still take before it counts as failing (0: wait for --upstream-timeout)")
	fs.DurationVar(&cfg.upstreamBackoffMax, "upstream-backoff-max", 30*time.Second, "longest wait before a skipped upstream is tried again (the wait starts at 1s and doubles)")
	fs.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long shutdown (SIGINT, SIGTERM) and a reload (SIGHUP) wait for in-flight responses")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "`level` of the least important lines logged: debug, info, warn or error")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "`format` of the log lines: text or json")
	fs.StringVar(&cfg.adminToken, "admin-token", "", "bearer `token` for the admin API under /_/; without it only loopback clients may use it")
	fs.StringVar(&cfg.adminTokenFile, "admin-token-file", "", "`file` holding the admin token (keeps it out of argv and config files)")
	fs.IntVar(&cfg.missLogMax, "miss-log-max", 10000, "rows kept in the miss log, the least recently seen dropped first (0: no limit)")
	fs.DurationVar(&cfg.missRecheck, "miss-recheck", time.Minute, "first wait before re-asking upstreams about a path none had, doubling each time (0 turns it off)")
	fs.DurationVar(&cfg.missRecheckMax, "miss-recheck-max", time.Hour, "longest wait between re-asks about a missing path")
	fs.Var(&cfg.pins, "pin", "`STORE_PATH` kept forever with its closure and prefetched at start, repeatable")
	fs.IntVar(&cfg.prefetchConcurrency, "prefetch-concurrency", 4, "NAR downloads one prefetch job runs at once")
	fs.IntVar(&cfg.fetchConnections, "fetch-connections", 4, "ranged connections that fetch one NAR of 64 MiB or more at once from an upstream that accepts ranges (1: one stream)")
	fs.StringVar(&cfg.recompress, "recompress", "auto", "auto, zstd or off (`mode`): zstd serves NARs of 64 KiB or more fetched as xz, bzip2 or none as zstd, recompressed once in the background while the clients pause; auto is zstd on local disk, off with --storage s3://")
	fs.StringVar(&cfg.metricsListen, "metrics-listen", "", "also serve /metrics on this `address` (it is always on the main listener too)")
	fs.StringVar(&cfg.pprofListen, "pprof-listen", "", "serve Go's profiles (/debug/pprof/) on this `address`, e.g. 127.0.0.1:6060; off by default")
	fs.IntVar(&cfg.maxConnections, "max-connections", 4096, "client connections open at once; more wait in the kernel's queue (0: no bound)")
	fs.DurationVar(&cfg.writeStallTimeout, "write-stall-timeout", time.Minute, "cut a client that accepts no response bytes for this long (0: never); a slow download that keeps moving is never cut")
	cfg.minFree = 1 << 30
	fs.Var(sizeFlag{&cfg.minFree}, "min-free", "free disk `size` (10GiB, 500MB) to keep: under it the least recently used NARs are evicted, and /readyz answers 503 while it cannot be kept; with s3 storage only the cache dir's (index and spool): never a reason to delete from the bucket")
	fs.Var(sizeFlag{&cfg.maxSize}, "max-size", "bound on the cache's `size`, NAR files plus index (200GiB, 500MB): past it the least recently used NARs are evicted; 0: no bound but --min-free. With s3 storage, the bound on the bucket's NAR objects, kept by one proxy at a time")
	fs.DurationVar(&cfg.pruneAfter, "prune-after", evict.DefaultPruneAfter, "how long a narinfo whose NAR was evicted stays in the index neither served nor stored before it and its origin record are pruned; 0: never. The default is Nix's narinfo-cache-positive-ttl, 30 days: keep it at least the clients' setting")
	fs.Var(&cfg.keepLatest, "keep-latest", "`GLOB=K`: of the cached store paths whose name matches GLOB, keep the K first seen most recently, with their closures, like pins; repeatable")
	fs.BoolVar(&cfg.evictUploads, "evict-uploads", false, "let eviction delete the least recently served uploaded paths like pulled ones, narinfo with NAR (nothing can fetch them again); without it an upload leaves only when a --keep-latest rule supersedes it or by the delete command")
	fs.StringVar(&cfg.writeTokenFile, "write-token-file", "", "`file` holding the token that uploads (`nix copy --to`) must carry; uploads are off without it")
	fs.StringVar(&cfg.secretKeyFile, "secret-key-file", "", "Nix secret key `file` (nix key generate-secret, nix-cache-proxy keygen): uploads and narinfos pulled with a trusted signature are also signed by it")
	cfg.uploadMaxSize = 64 << 30
	fs.Var(sizeFlag{&cfg.uploadMaxSize}, "upload-max-size", "largest NAR file an upload may send, as a `size` (64GiB)")
	return fs
}

func defaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "nix-cache-proxy")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "nix-cache-proxy")
	}
	return "nix-cache-proxy"
}

// parseServeConfig fills a serveConfig from args, then the environment, then
// the config file (a flag given on the command line beats its environment
// variable, which beats the config file, which beats the default), and
// checks it. serve and check-config both come through here.
func parseServeConfig(args []string, getenv func(string) string) (*serveConfig, *flag.FlagSet, error) {
	cfg := &serveConfig{}
	fs := newServeFlags("serve", cfg)
	from, err := loadConfig(fs, args, getenv, nil)
	if err != nil {
		return nil, fs, err
	}
	if fs.NArg() > 0 {
		return nil, fs, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := cfg.check(); err != nil {
		return nil, fs, withSource(err, from)
	}
	if path := fs.Lookup("config").Value.String(); path != "" {
		var err error
		if cfg.warms, err = readWarms(path); err != nil {
			return nil, fs, err
		}
	}
	return cfg, fs, nil
}

// flagInError finds the flag a check error is about: "--pin: ...".
var flagInError = regexp.MustCompile(`^--([a-z0-9-]+)`)

// withSource adds to a check error about a setting where that setting was
// given, when not on the command line: the value may sit in a config file
// or an environment variable the admin does not have in mind.
func withSource(err error, from map[string]string) error {
	m := flagInError.FindStringSubmatch(err.Error())
	if m == nil || from[m[1]] == "" {
		return err
	}
	return fmt.Errorf("%w (set by %s)", err, from[m[1]])
}

// parseConfig parses args into fs, then fills the flags not given from the
// environment and the config file. Flags named in own are the command's own
// and come from the command line only: the config file and environment are
// shared by every command.
func parseConfig(fs *flag.FlagSet, args []string, getenv func(string) string, own map[string]bool) error {
	_, err := loadConfig(fs, args, getenv, own)
	return err
}

// loadConfig is parseConfig that also returns where each flag not left at
// its default came from: "" for the command line, the variable's name
// for the environment, `[disk] max-size in FILE` for the config file.
func loadConfig(fs *flag.FlagSet, args []string, getenv func(string) string, own map[string]bool) (map[string]string, error) {
	restore := explainValues(fs)
	err := parseInterspersed(fs, args)
	if err != nil {
		restore()
		return nil, flagSyntaxError(err)
	}
	from := map[string]string{}
	fs.Visit(func(f *flag.Flag) { from[f.Name] = "" })
	fs.VisitAll(func(f *flag.Flag) {
		v := getenv(envName(f.Name))
		_, set := from[f.Name]
		if err != nil || v == "" || set || own[f.Name] {
			return
		}
		from[f.Name] = envName(f.Name)
		if l, ok := f.Value.(listValue); ok {
			err = l.setAll(strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }))
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			// The value's error quotes what it got.
			err = fmt.Errorf("%s: %w", envName(f.Name), err)
		}
	})
	restore()
	if err != nil {
		return nil, err
	}
	path := fs.Lookup("config").Value.String()
	if path == "" {
		return from, nil
	}
	fc, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	applyFile(fs, fc, func(name string) bool {
		if _, set := from[name]; set {
			return true
		}
		k, _ := keyOfFlag(name)
		from[name] = k.name() + " in " + path
		return false
	})
	return from, nil
}

// parseInterspersed is fs.Parse that also takes flags after arguments, as
// in `check /nix/store/...-x --server URL`; plain fs.Parse would stop at the
// first argument and take every later flag for a path. "--" still ends the
// flags. fs.Args() returns the arguments afterwards.
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// listValue is a flag that takes a list from the environment or config file.
type listValue interface {
	setAll([]string) error
}

// stringList is a repeatable flag whose first Set replaces the default.
type stringList struct {
	values []string
	set    bool
}

func (l *stringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.values, " ")
}

func (l *stringList) Set(v string) error {
	if !l.set {
		l.values, l.set = nil, true
	}
	l.values = append(l.values, v)
	return nil
}

func (l *stringList) setAll(vs []string) error {
	l.values, l.set = nil, true
	l.values = append(l.values, vs...)
	return nil
}
