package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// darwinSystem is what eval.nix's darwin returns: a nix-darwin system
// with darwinModules.default and darwinModules.client.
type darwinSystem struct {
	Activate     string            `json:"activate"`     // the system's activate script
	BuildCommand string            `json:"buildCommand"` // the system build, which shellchecks it
	Plists       map[string]string `json:"plists"`       // /Library/LaunchDaemons/*
	NixConf      string            `json:"nixConf"`      // /etc/nix/nix.conf
	Users        map[string]struct {
		UID  int     `json:"uid"`
		GID  int     `json:"gid"`
		Home *string `json:"home"`
	} `json:"users"`
	Warnings []string `json:"warnings"`
	Options  []string `json:"options"` // of services.nix-cache-proxy
}

// The darwin configurations the tests build; the default one and the
// examples of deploy/README.md's shape.
const (
	darwinDefault = `{ services.nix-cache-proxy.enable = true; }`
	// Every secret, the documented settings example, a cache dir with a
	// space, another UID and log file, and the client pointed at itself.
	darwinFull = `{
		imports = [ { services.nix-cache-proxy.settings = (import ./settings.nix).example; } ];
		services.nix-cache-proxy = {
			enable = true;
			settings.disk.cache-dir = "/Volumes/Cache Disk/nix-cache-proxy";
			uid = 576;
			gid = 577;
			logFile = "/Volumes/Cache Disk/nix-cache-proxy.log";
			netrcFile = "/etc/nix-cache-proxy/netrc";
			adminTokenFile = "/etc/nix-cache-proxy/admin-token";
			writeTokenFile = "/etc/nix-cache-proxy/write-token";
			secretKeyFile = "/etc/nix-cache-proxy/secret-key";
		};
		nix-cache-proxy.client = {
			enable = true;
			url = "http://localhost:5575";
			publicKeys = [ "mycache.cachix.org-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" ];
		};
	}`
	darwinClient = `{ nix-cache-proxy.client = { enable = true; url = "http://cache.lan:5575"; }; }`
	// The system .github/workflows/nix.yml builds on a macOS runner.
	darwinCI = `{
		imports = ((import ./tests/darwin-ci/flake.nix).outputs {
			nix-darwin.lib.darwinSystem = args: args;
			nix-cache-proxy = e.flake;
		}).darwinConfigurations.ci.modules;
	}`
)

// TestDarwinModule builds nix-darwin systems with the server and client
// modules and checks what a darwin-rebuild would run: the activation
// script passes nix-darwin's own shellcheck, the launchd daemon waits for
// the Nix store and runs serve with a config check-config accepts, the
// cache dir is set up before the daemon starts, the user's home is left
// alone, and the client's nix.conf is one Nix reads without complaint.
func TestDarwinModule(t *testing.T) {
	flags := flagNames(t)
	for _, tc := range []struct {
		name, module, cacheDir, logFile string
		secrets                         int
	}{
		{"defaults", darwinDefault, "/var/lib/nix-cache-proxy", "/var/log/nix-cache-proxy.log", 0},
		{"full", darwinFull, "/Volumes/Cache Disk/nix-cache-proxy", "/Volumes/Cache Disk/nix-cache-proxy.log", 4},
		{"CI workflow's", darwinCI, "/var/lib/nix-cache-proxy", "/var/log/nix-cache-proxy.log", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sys darwinSystem
			e := mustEval(t, "darwin", tc.module, &sys)
			shellcheckActivation(t, sys)

			// Defect 4: openFirewall did nothing on nix-darwin.
			for _, o := range sys.Options {
				if o == "openFirewall" {
					t.Error("services.nix-cache-proxy.openFirewall is declared on nix-darwin, where it does nothing")
				}
			}

			// Defect 2: nix-darwin refuses to change an existing user's home,
			// so a home that follows cache-dir breaks moving the cache.
			u, ok := sys.Users["_nix-cache-proxy"]
			if !ok {
				t.Fatal("no users.users._nix-cache-proxy")
			}
			if u.Home != nil {
				t.Errorf("users.users._nix-cache-proxy.home = %q: nix-darwin aborts activation when it changes; leave it null", *u.Home)
			}
			if regexp.MustCompile(`wrong home directory for %s.*\n(.*\n)*?.*_nix-cache-proxy`).MatchString(sys.Activate) {
				t.Error("the activation script checks _nix-cache-proxy's home directory")
			}

			// The cache dir and log file are the user's before launchd starts
			// the daemon.
			setup := strings.Index(sys.Activate, "setting up nix-cache-proxy...")
			load := strings.Index(sys.Activate, "launchctl load -w '/Library/LaunchDaemons/org.nix-cache-proxy.plist'")
			if setup < 0 || load < 0 || setup > load {
				t.Errorf("the activation script does not set up the cache dir (at %d) before it loads the daemon (at %d)", setup, load)
			}
			q := shellQuote(tc.cacheDir)
			for _, want := range []string{"/bin/mkdir -p " + q, "/bin/chmod 0750 " + q, "/usr/sbin/chown _nix-cache-proxy:_nix-cache-proxy " + q,
				"/usr/sbin/chown _nix-cache-proxy:_nix-cache-proxy " + shellQuote(tc.logFile)} {
				if !strings.Contains(sys.Activate, want+"\n") {
					t.Errorf("the activation script lacks %q", want)
				}
			}

			args := checkDaemonPlist(t, e, sys.Plists["org.nix-cache-proxy.plist"], tc.cacheDir, tc.logFile, flags)
			if got := strings.Count(strings.Join(args, " "), "-file "); got != tc.secrets {
				t.Errorf("the daemon gets %d secret files, want %d: %q", got, tc.secrets, args)
			}
		})
	}
}

// shellcheckActivation runs the shellcheck command nix-darwin's system
// build runs on the activate script (defect 1: our mkdir -p -m failed it).
func shellcheckActivation(t *testing.T, sys darwinSystem) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^shellcheck ((?:--\S+ )*)\$out/activate`).FindStringSubmatch(sys.BuildCommand)
	if m == nil {
		t.Fatalf("nix-darwin's system build no longer runs shellcheck on $out/activate:\n%s", sys.BuildCommand)
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("shellcheck not available, and CI is set")
		}
		t.Skip("shellcheck not available (Debian: shellcheck)")
	}
	activate := filepath.Join(t.TempDir(), "activate")
	script := strings.ReplaceAll(sys.Activate, "@out@", "/nix/store/00000000000000000000000000000000-darwin-system")
	if err := os.WriteFile(activate, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("shellcheck", append(strings.Fields(m[1]), activate)...).CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck %s activate (as nix-darwin's system build runs it): %v\n%s", m[1], err, out)
	}
}

// checkDaemonPlist checks the launchd daemon's plist and runs its command
// line through check-config, with sample files for the secrets; it returns
// serve's arguments.
func checkDaemonPlist(t *testing.T, e moduleEval, text, cacheDir, logFile string, flags map[string]bool) []string {
	t.Helper()
	if text == "" {
		t.Fatal("no /Library/LaunchDaemons/org.nix-cache-proxy.plist")
	}
	var p struct {
		Label, UserName, GroupName, WorkingDirectory, StandardOutPath, StandardErrorPath, ProcessType string
		ProgramArguments                                                                              []string
		RunAtLoad, KeepAlive                                                                          bool
		SoftResourceLimits, HardResourceLimits                                                        map[string]int
	}
	plist(t, text, &p)
	if p.Label != "org.nix-cache-proxy" || p.UserName != "_nix-cache-proxy" || p.GroupName != "_nix-cache-proxy" {
		t.Errorf("Label %q runs as %q:%q, want org.nix-cache-proxy as _nix-cache-proxy:_nix-cache-proxy", p.Label, p.UserName, p.GroupName)
	}
	if !p.RunAtLoad || !p.KeepAlive || p.ProcessType != "Interactive" {
		t.Errorf("RunAtLoad %v, KeepAlive %v, ProcessType %q", p.RunAtLoad, p.KeepAlive, p.ProcessType)
	}
	if p.WorkingDirectory != cacheDir || p.StandardOutPath != logFile || p.StandardErrorPath != logFile {
		t.Errorf("WorkingDirectory %q, StandardOutPath %q, StandardErrorPath %q; want %q and %q", p.WorkingDirectory, p.StandardOutPath, p.StandardErrorPath, cacheDir, logFile)
	}
	if p.SoftResourceLimits["NumberOfFiles"] != 65536 || p.HardResourceLimits["NumberOfFiles"] != 65536 {
		t.Errorf("NumberOfFiles limits %v / %v, want 65536", p.SoftResourceLimits, p.HardResourceLimits)
	}

	// Defect 3: a store path started before the Nix volume is mounted fails
	// at boot; nix-darwin's `command` waits for it.
	const wait = "/bin/wait4path /nix/store && exec "
	a := p.ProgramArguments
	if len(a) != 3 || a[0] != "/bin/sh" || a[1] != "-c" || !strings.HasPrefix(a[2], wait) {
		t.Fatalf("ProgramArguments %q, want /bin/sh -c '%s…'", a, wait)
	}
	argv := shellWords(t, strings.TrimPrefix(a[2], wait))
	if !strings.HasPrefix(argv[0], "/nix/store/") || !strings.HasSuffix(argv[0], "/bin/nix-cache-proxy") || argv[1] != "serve" {
		t.Fatalf("the daemon runs %q, want the package's nix-cache-proxy serve", argv)
	}
	return checkServeArgs(t, e, "org.nix-cache-proxy.plist", argv[2:], flags, cacheDir)
}

// checkServeArgs runs serve's arguments as a module passes them through
// check-config: --config's file is followed to the settings it checked at
// build time, a secret flag's file is replaced by a sample. It checks the
// effective cache-dir and returns the arguments.
func checkServeArgs(t *testing.T, e moduleEval, what string, args []string, flags map[string]bool, cacheDir string) []string {
	t.Helper()
	dir := t.TempDir()
	var run []string
	for i := 0; i < len(args); i++ {
		flag := strings.TrimPrefix(args[i], "--")
		if flag == args[i] || !flags[flag] || i+1 == len(args) {
			t.Fatalf("%s passes %q, which is not a flag of serve with a value", what, args[i])
		}
		value := args[i+1]
		i++
		switch {
		case flag == "config":
			value = e.checkedConfig(t, what, value)
		case strings.HasSuffix(flag, "-file"):
			value = sampleSecret(t, dir, flag)
		}
		run = append(run, "--"+flag, value)
	}
	// The cache dir itself need not exist for check-config.
	got := checkConfig(t, what, nil, run...)
	if dir := setting(got, "disk", "cache-dir"); dir != cacheDir {
		t.Errorf("%s: cache-dir = %v, want %s", what, dir, cacheDir)
	}
	return args
}

// shellQuote quotes s as lib.escapeShellArg does.
func shellQuote(s string) string {
	if regexp.MustCompile(`^[a-zA-Z0-9,._+:@%/-]+$`).MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// TestDarwinClientModule checks the client module inside nix-darwin: the
// nix.conf it writes is one Nix reads without a warning, the machine's own
// settings win over the module's defaults, and no empty key is written.
func TestDarwinClientModule(t *testing.T) {
	for _, tc := range []struct {
		name, module string
		want         []string // lines of nix.conf
		unwanted     []string // prefixes of lines
	}{
		{"defaults", darwinClient,
			[]string{"extra-substituters = http://cache.lan:5575", "connect-timeout = 3", "fallback = true", "narinfo-cache-negative-ttl = 60"},
			// Defect 5: an empty publicKeys wrote "extra-trusted-public-keys = ".
			[]string{"extra-trusted-public-keys"}},
		{"with a server and keys", darwinFull,
			[]string{"extra-substituters = http://localhost:5575", "extra-trusted-public-keys = mycache.cachix.org-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, nil},
		// Defect 5: the module's settings at normal priority conflicted
		// with the machine's own.
		{"the machine's own settings win", `{
			imports = [ (` + darwinClient + `) ];
			nix.settings = { connect-timeout = 10; fallback = false; narinfo-cache-negative-ttl = 3600; };
		}`, []string{"connect-timeout = 10", "fallback = false", "narinfo-cache-negative-ttl = 3600"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sys darwinSystem
			mustEval(t, "darwin", tc.module, &sys)
			lines := strings.Split(sys.NixConf, "\n")
			for _, want := range tc.want {
				if !slices.Contains(lines, want) {
					t.Errorf("nix.conf lacks %q:\n%s", want, sys.NixConf)
				}
			}
			for _, l := range lines {
				for _, bad := range tc.unwanted {
					if strings.HasPrefix(l, bad) {
						t.Errorf("nix.conf has %q", l)
					}
				}
			}
			nixShowConfig(t, sys.NixConf)
		})
	}
}

// nixShowConfig has Nix read nixConf as nix-darwin's build of nix.conf
// checks it: any warning (an unknown or malformed setting) fails.
func nixShowConfig(t *testing.T, nixConf string) {
	t.Helper()
	if _, err := exec.LookPath("nix"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nix not available, and CI is set")
		}
		t.Skip("nix not available (Debian: nix-bin)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nix.conf"), []byte(nixConf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nix", "show-config", "--no-net", "--option", "experimental-features", "nix-command")
	cmd.Env = append(os.Environ(), "NIX_CONF_DIR="+dir, "NIX_CONFIG=", "NIX_USER_CONF_FILES="+filepath.Join(dir, "none"))
	out, err := cmd.CombinedOutput()
	if err != nil || regexp.MustCompile(`(?m)^(warning|error):`).Match(out) {
		t.Errorf("nix show-config with the generated nix.conf: %v\n%s\nnix.conf:\n%s", err, out, nixConf)
	}
}

// TestDarwinModuleRefuses checks configurations nix-darwin must refuse
// at evaluation, with a message that says why.
func TestDarwinModuleRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, module string
		want         []string
	}{
		// Defect 4: declared, it did nothing on nix-darwin.
		{"openFirewall", `{ services.nix-cache-proxy = { enable = true; openFirewall = true; }; }`,
			[]string{"services.nix-cache-proxy.openFirewall' does not exist"}},
		// Defect 7: log-format was any string, refused only by the build.
		{"log format", `{ services.nix-cache-proxy = { enable = true; settings.log.format = "xml"; }; }`,
			[]string{"services.nix-cache-proxy.settings.log.format", `"xml"`}},
		{"listen without a port", `{ services.nix-cache-proxy = { enable = true; settings.http.listen = "localhost"; }; }`,
			[]string{"services.nix-cache-proxy.settings.http.listen", `"localhost"`}},
		// The settings are the config file's sections and keys: a typo or a
		// key of the old flat format is refused before the build.
		{"unknown key", `{ services.nix-cache-proxy = { enable = true; settings.disk.max-sise = "1GiB"; }; }`,
			[]string{"services.nix-cache-proxy.settings.disk.max-sise' does not exist"}},
		{"flat key", `{ services.nix-cache-proxy = { enable = true; settings.negative-ttl = "1m"; }; }`,
			[]string{"services.nix-cache-proxy.settings.negative-ttl' does not exist"}},
		{"unset cache dir", `{ services.nix-cache-proxy = { enable = true; settings.disk.cache-dir = null; }; }`,
			[]string{"services.nix-cache-proxy.settings.disk.cache-dir"}},
		// Defect 5: with nix.enable off (Determinate Nix) the client did
		// nothing, silently.
		{"client without nix.enable", `{ imports = [ (` + darwinClient + `) ]; nix.enable = false; }`,
			[]string{"nix-cache-proxy.client.enable needs nix.enable", "extra-substituters = http://cache.lan:5575"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evalError(t, "darwin", tc.module, tc.want...)
		})
	}
}

// TestDarwinModuleImportedTwice checks the flake's module can be imported
// twice (by the user and by another module) and names its file in errors
// (defect 6: a bare function was "<unknown-file>" and declared its options
// twice).
func TestDarwinModuleImportedTwice(t *testing.T) {
	var sys darwinSystem
	mustEval(t, "darwin", `{ imports = [ e.flake.darwinModules.default e.flake.darwinModules.client (`+darwinDefault+`) ]; }`, &sys)
	if _, ok := sys.Plists["org.nix-cache-proxy.plist"]; !ok {
		t.Error("no daemon with the module imported twice")
	}
	// A definition of the module conflicting with the user's names both.
	evalError(t, "darwin", `{ imports = [ (`+darwinDefault+`) ]; users.users._nix-cache-proxy.uid = 600; }`,
		"users.users._nix-cache-proxy.uid' has conflicting definition values", "deploy/nix/darwin.nix': 575")
}

// TestDarwinModuleWarm: on nix-darwin too, warm becomes [[warm]] tables
// check-config reads back, and the daemon gets nix on its PATH and a home
// in the cache dir for it (its user's is /var/empty).
func TestDarwinModuleWarm(t *testing.T) {
	needPython(t)
	var sys darwinSystem
	e := mustEval(t, "darwin", `{ services.nix-cache-proxy = {
		enable = true;
		warm = [ { flake = "github:me/macs"; attrs = [ "darwinConfigurations.studio.system" ]; keep = 2; } ];
	}; }`, &sys)
	var p struct {
		ProgramArguments     []string
		EnvironmentVariables map[string]string
	}
	plist(t, sys.Plists["org.nix-cache-proxy.plist"], &p)
	env := p.EnvironmentVariables
	if !strings.Contains(env["PATH"], "-nix-") || env["HOME"] != "/var/lib/nix-cache-proxy/nix-home" || env["XDG_CACHE_HOME"] != "/var/lib/nix-cache-proxy/nix-home/.cache" {
		t.Errorf("EnvironmentVariables %v: want nix on the PATH and a home in the cache dir", env)
	}
	m := regexp.MustCompile(`--config (\S+)`).FindStringSubmatch(p.ProgramArguments[len(p.ProgramArguments)-1])
	if m == nil {
		t.Fatalf("ProgramArguments %q pass no --config", p.ProgramArguments)
	}
	got := checkConfig(t, "the daemon", nil, "--config", e.checkedConfig(t, "the daemon", m[1]))
	warm, _ := got["warm"].([]map[string]any)
	if len(warm) != 1 || warm[0]["flake"] != "github:me/macs" || warm[0]["keep"] != int64(2) || warm[0]["interval"] != "10m" {
		t.Errorf("check-config reads warm = %#v", got["warm"])
	}

	var plain darwinSystem
	mustEval(t, "darwin", darwinDefault, &plain)
	if strings.Contains(plain.Plists["org.nix-cache-proxy.plist"], "XDG_CACHE_HOME") {
		t.Error("without warm, the daemon gets nix's environment")
	}
}
