package deploy

import (
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// nixosSystem is what eval.nix's nixos returns.
type nixosSystem struct {
	Service *struct {
		WantedBy      []string       `json:"wantedBy"`
		After         []string       `json:"after"`
		ServiceConfig map[string]any `json:"serviceConfig"`
	} `json:"service"`
	// The client's relay, with roaming.
	RelayService *struct {
		WantedBy      []string       `json:"wantedBy"`
		ServiceConfig map[string]any `json:"serviceConfig"`
	} `json:"relayService"`
	Ports        []int          `json:"ports"`
	NixSettings  map[string]any `json:"nixSettings"`
	Warnings     []string       `json:"warnings"`
	Options      []string       `json:"options"`
	Declarations []string       `json:"declarations"`
	Docs         map[string]struct {
		Description string `json:"description"`
		Type        string `json:"type"`
		Default     struct {
			Text string `json:"text"`
		} `json:"default"`
	} `json:"docs"`
}

// TestNixOSModuleDocs checks the options' documentation renders, one
// typed option per key of the config file, each saying its flag and, when
// the module leaves it unset, the binary's default.
func TestNixOSModuleDocs(t *testing.T) {
	var sys nixosSystem
	mustEval(t, "nixos", `{ }`, &sys)
	for name, want := range map[string][3]string{
		"services.nix-cache-proxy.settings.disk.max-size":     {"--max-size", "null or string", "nix-cache-proxy's default, `0` (none)"},
		"services.nix-cache-proxy.settings.upstream.urls":     {"--upstream", "null or (list of string)", "https://cache.nixos.org"},
		"services.nix-cache-proxy.settings.log.format":        {"--log-format", `null or one of "text", "json"`, "`\"text\"`"},
		"services.nix-cache-proxy.settings.http.listen":       {"openFirewall", "string matching the pattern (.*):([0-9]+)", "0.0.0.0:5575"},
		"services.nix-cache-proxy.settings.fleet.evict-grace": {"--evict-grace", "null or string", "`\"1h\"`"},
	} {
		d, ok := sys.Docs[name]
		if !ok {
			t.Errorf("no option %s", name)
			continue
		}
		if !strings.Contains(d.Description, want[0]) || d.Type != want[1] || !strings.Contains(d.Default.Text, want[2]) {
			t.Errorf("%s: description %q, type %q, default %q; want %q, %q, %q", name, d.Description, d.Type, d.Default.Text, want[0], want[1], want[2])
		}
	}
	n := 0
	for name := range sys.Docs {
		if strings.HasPrefix(name, "services.nix-cache-proxy.settings.") {
			n++
		}
	}
	if n < 40 {
		t.Errorf("%d settings options documented, want one per key of the config file", n)
	}
}

const nixosClient = `{ nix-cache-proxy.client = { enable = true; url = "http://cache.lan:5575"; }; }`

// TestNixOSModule evaluates nixosModules.default with nixpkgs' real
// lib.evalModules for typical configurations and checks the systemd
// service: its ExecStart runs serve with a config check-config accepts
// and the secrets as credentials, its hardening, and the firewall.
func TestNixOSModule(t *testing.T) {
	flags := flagNames(t)
	for _, tc := range []struct {
		name, module string
		cacheDir     string
		ports        []int
		warning      string
		credentials  []string
	}{
		{"defaults", `{ services.nix-cache-proxy.enable = true; }`, "/var/lib/nix-cache-proxy", nil, "", nil},
		{"open firewall", `{ services.nix-cache-proxy = { enable = true; openFirewall = true; }; }`, "/var/lib/nix-cache-proxy", []int{5575}, "", nil},
		{"IPv6 and another port", `{ services.nix-cache-proxy = { enable = true; openFirewall = true; settings.http.listen = "[::]:5599"; }; }`,
			"/var/lib/nix-cache-proxy", []int{5599}, "", nil},
		// Defect 7: the port of "localhost:…" was read with toInt of
		// splitString; a loopback address with openFirewall is a mistake
		// worth a warning.
		{"loopback with open firewall", `{ services.nix-cache-proxy = { enable = true; openFirewall = true; settings.http.listen = "localhost:5575"; }; }`,
			"/var/lib/nix-cache-proxy", []int{5575}, "answers this host only", nil},
		{"full", `{
			imports = [ { services.nix-cache-proxy.settings = (import ./settings.nix).example; } ];
			services.nix-cache-proxy = {
				enable = true;
				settings.disk.cache-dir = "/srv/nix cache";
				netrcFile = "/run/secrets/netrc";
				adminTokenFile = "/run/secrets/admin-token";
				writeTokenFile = "/run/secrets/write-token";
				secretKeyFile = "/run/secrets/secret-key";
			};
		}`, "/srv/nix cache", nil, "", []string{"admin-token:/run/secrets/admin-token", "netrc:/run/secrets/netrc", "secret-key:/run/secrets/secret-key", "write-token:/run/secrets/write-token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sys nixosSystem
			e := mustEval(t, "nixos", tc.module, &sys)
			if sys.Service == nil {
				t.Fatal("no systemd.services.nix-cache-proxy")
			}
			if !slices.Contains(sys.Service.WantedBy, "multi-user.target") || !slices.Contains(sys.Service.After, "network-online.target") {
				t.Errorf("wantedBy %q, after %q", sys.Service.WantedBy, sys.Service.After)
			}
			if !slices.Equal(sys.Ports, tc.ports) {
				t.Errorf("opens ports %v, want %v", sys.Ports, tc.ports)
			}
			if warned := strings.Join(sys.Warnings, "\n"); (tc.warning == "") != (warned == "") || !strings.Contains(warned, tc.warning) {
				t.Errorf("warnings %q, want one with %q", sys.Warnings, tc.warning)
			}
			sc := sys.Service.ServiceConfig
			for key, want := range map[string]any{
				"DynamicUser": true, "StateDirectory": "nix-cache-proxy", "ProtectSystem": "strict", "ProtectHome": true,
				"NoNewPrivileges": true, "CapabilityBoundingSet": "", "PrivateUsers": true, "MemoryDenyWriteExecute": true,
				"LimitNOFILE": float64(65536), "Restart": "on-failure",
			} {
				if sc[key] != want {
					t.Errorf("serviceConfig.%s = %v, want %v", key, sc[key], want)
				}
			}
			if rw, _ := sc["ReadWritePaths"].([]any); (tc.cacheDir != "/var/lib/nix-cache-proxy") != (len(rw) == 1 && rw[0] == tc.cacheDir) {
				t.Errorf("ReadWritePaths %v for cache-dir %s", sc["ReadWritePaths"], tc.cacheDir)
			}

			// The credentials: each LoadCredential is passed to its flag as
			// %d/NAME, and nothing else.
			var creds []string
			for _, c := range sc["LoadCredential"].([]any) {
				creds = append(creds, c.(string))
			}
			if strings.Join(creds, " ") != strings.Join(tc.credentials, " ") {
				t.Errorf("LoadCredential %q, want %q", creds, tc.credentials)
			}
			exec := shellWords(t, sc["ExecStart"].(string))
			if !strings.HasSuffix(exec[0], "/bin/nix-cache-proxy") || exec[1] != "serve" {
				t.Fatalf("ExecStart runs %q, want the package's nix-cache-proxy serve", exec)
			}
			args := exec[2:]
			passed := map[string]bool{}
			for i, a := range args {
				if m := regexp.MustCompile(`^%d/(.+)$`).FindStringSubmatch(a); m != nil {
					passed[m[1]] = true
					if !strings.HasSuffix(args[i-1], "-file") {
						t.Errorf("ExecStart passes %s to %s", a, args[i-1])
					}
				}
			}
			for _, c := range creds {
				if !passed[strings.SplitN(c, ":", 2)[0]] {
					t.Errorf("credential %s is loaded but no flag reads it", c)
				}
			}
			checkServeArgs(t, e, "ExecStart", args, flags, tc.cacheDir)
		})
	}
}

// TestNixOSClientModule checks the client module on NixOS's module
// system: defaults the machine may override, no empty key, and an
// assertion when the system does not manage Nix.
func TestNixOSClientModule(t *testing.T) {
	var sys nixosSystem
	mustEval(t, "nixos", nixosClient, &sys)
	if got, _ := sys.NixSettings["extra-substituters"].([]any); !slices.Equal(got, []any{"http://cache.lan:5575"}) {
		t.Errorf("nix.settings.extra-substituters = %v", sys.NixSettings["extra-substituters"])
	}
	for k, v := range map[string]any{"connect-timeout": float64(3), "fallback": true, "narinfo-cache-negative-ttl": float64(60)} {
		if got := sys.NixSettings[k]; got != v {
			t.Errorf("nix.settings.%s = %v, want %v", k, got, v)
		}
	}
	// Defect 5: an empty publicKeys wrote an empty extra-trusted-public-keys.
	if v, ok := sys.NixSettings["extra-trusted-public-keys"]; ok {
		t.Errorf("nix.settings.extra-trusted-public-keys = %v without publicKeys", v)
	}

	// Defect 5: the machine's own settings conflicted with the module's.
	mustEval(t, "nixos", `{ imports = [ (`+nixosClient+`) ]; nix.settings = { connect-timeout = 10; fallback = false; narinfo-cache-negative-ttl = 0; }; }`, &sys)
	for k, v := range map[string]any{"connect-timeout": float64(10), "fallback": false, "narinfo-cache-negative-ttl": float64(0)} {
		if got := sys.NixSettings[k]; got != v {
			t.Errorf("with the machine's own setting, nix.settings.%s = %v, want %v", k, got, v)
		}
	}
	evalError(t, "nixos", `{ imports = [ (`+nixosClient+`) ]; nix.enable = false; }`, "nix-cache-proxy.client.enable needs nix.enable")
}

// TestNixOSModuleRefuses checks settings the module refuses at
// evaluation with a message that names the option.
func TestNixOSModuleRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		module string
		want   []string
	}{
		// Defect 7: openFirewall with listen = "localhost" failed in toInt.
		"listen without a port": {`{ services.nix-cache-proxy = { enable = true; openFirewall = true; settings.http.listen = "localhost"; }; }`,
			[]string{"services.nix-cache-proxy.settings.http.listen", `"localhost"`}},
		"log format": {`{ services.nix-cache-proxy = { enable = true; settings.log.format = "xml"; }; }`,
			[]string{"services.nix-cache-proxy.settings.log.format", `"xml"`}},
	} {
		t.Run(name, func(t *testing.T) { evalError(t, "nixos", tc.module, tc.want...) })
	}
}

// TestNixOSModuleImportedTwice checks defect 6 on NixOS: the flake's
// module imported twice is one import, and its options name its file.
func TestNixOSModuleImportedTwice(t *testing.T) {
	var sys nixosSystem
	mustEval(t, "nixos", `{ imports = [ e.flake.nixosModules.default e.flake.nixosModules.client ]; services.nix-cache-proxy.enable = true; }`, &sys)
	if sys.Service == nil {
		t.Error("no service with the module imported twice")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "deploy", "nix", "nixos.nix"); len(sys.Declarations) != 1 || sys.Declarations[0] != want {
		t.Errorf("services.nix-cache-proxy.enable is declared in %q, want %s", sys.Declarations, want)
	}
}

// TestNixOSModuleWarm: services.nix-cache-proxy.warm becomes the config
// file's [[warm]] tables, which check-config reads back, and the service
// gets nix on its PATH and a home and cache for it; without warm it gets
// neither.
func TestNixOSModuleWarm(t *testing.T) {
	var sys struct {
		Service struct {
			Path          []string          `json:"path"`
			Environment   map[string]string `json:"environment"`
			ServiceConfig map[string]any    `json:"serviceConfig"`
		} `json:"service"`
	}
	e := mustEval(t, "nixos", `{ services.nix-cache-proxy = {
		enable = true;
		warm = [
			{ flake = "github:me/macs"; attrs = [ "darwinConfigurations.studio.system" "packages.aarch64-linux.builder-image" ]; }
			{ flake = "path:/srv/flake"; attrs = [ "packages.x86_64-linux.default" ]; keep = 5; interval = "1h"; timeout = "30m"; max-memory = "16GiB"; }
		];
	}; }`, &sys)
	if len(sys.Service.Path) != 1 || !strings.Contains(sys.Service.Path[0], "-nix-") {
		t.Errorf("path %q, want the system's nix", sys.Service.Path)
	}
	if sys.Service.Environment["XDG_CACHE_HOME"] != "%C/nix-cache-proxy" || sys.Service.Environment["HOME"] == "" || sys.Service.ServiceConfig["CacheDirectory"] != "nix-cache-proxy" {
		t.Errorf("environment %v, CacheDirectory %v: want nix's home and cache in the service's cache directory", sys.Service.Environment, sys.Service.ServiceConfig["CacheDirectory"])
	}
	exec := shellWords(t, sys.Service.ServiceConfig["ExecStart"].(string))
	if exec[2] != "--config" {
		t.Fatalf("ExecStart %q", exec)
	}
	got := checkConfig(t, "ExecStart", nil, "--config", e.checkedConfig(t, "ExecStart", exec[3]))
	want := []map[string]any{
		{"flake": "github:me/macs", "attrs": []any{"darwinConfigurations.studio.system", "packages.aarch64-linux.builder-image"}, "keep": int64(3), "interval": "10m", "timeout": "10m", "max-memory": "8GiB"},
		{"flake": "path:/srv/flake", "attrs": []any{"packages.x86_64-linux.default"}, "keep": int64(5), "interval": "1h", "timeout": "30m", "max-memory": "16GiB"},
	}
	if !reflect.DeepEqual(got["warm"], want) {
		t.Errorf("check-config reads warm = %#v, want %#v", got["warm"], want)
	}

	var plain struct {
		Service map[string]any `json:"service"`
	}
	mustEval(t, "nixos", `{ services.nix-cache-proxy.enable = true; }`, &plain)
	if p, _ := plain.Service["path"].([]any); len(p) != 0 {
		t.Errorf("without warm, path %v", p)
	}
	evalError(t, "nixos", `{ services.nix-cache-proxy = { enable = true; warm = [ { flake = "github:me/macs#x"; attrs = [ "a" ]; } ]; }; }`, "flake")
}
