package deploy

import (
	"strings"
	"testing"
)

// TestREADMEModuleExamples evaluates every Nix example of deploy/README.md,
// README.md and docs/*.md that uses the flake's modules, as a user would paste it: a whole flake
// (its darwinConfigurations or nixosConfigurations, with nixpkgs'
// nixosSystem and nix-darwin's darwinSystem handing over their modules) or
// a module that names `nix-cache-proxy`. The server's command line and
// config go through check-config; placeholders (<its key>, <hash>) are
// filled in.
func TestREADMEModuleExamples(t *testing.T) {
	flags := flagNames(t)
	fill := strings.NewReplacer("<its key>", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "<hash>", "0123456789abcdfghijklmnpqrsvwxyz")
	n := 0
	for _, b := range blocks(t, "nix", append(docFiles(t), "README.md")...) {
		code := fill.Replace(b.body)
		if !strings.Contains(code, "nix-cache-proxy.") {
			continue
		}
		if b.file == "deploy/README.md" {
			n++
		}
		platform := "nixos"
		if strings.Contains(code, "darwinModules") {
			platform = "darwin"
		}
		var module string
		if strings.Contains(code, "Configurations.") {
			// A flake: its configuration's modules, without the user's own
			// files (./configuration.nix).
			module = `let
				flake = (` + code + `).outputs {
					self = { };
					nixpkgs.lib.nixosSystem = args: args;
					nix-darwin.lib.darwinSystem = args: args;
					nix-cache-proxy = e.flake;
				};
				system = builtins.head (builtins.attrValues (flake.` + platform + `Configurations));
			in { imports = builtins.filter (m: !builtins.isPath m) system.modules; }`
		} else {
			module = "let nix-cache-proxy = e.flake; in " + code
		}
		t.Run(b.String(), func(t *testing.T) {
			if platform == "darwin" {
				var sys darwinSystem
				e := mustEval(t, platform, module, &sys)
				if p, ok := sys.Plists["org.nix-cache-proxy.plist"]; ok {
					checkDaemonPlist(t, e, p, "/var/lib/nix-cache-proxy", "/var/log/nix-cache-proxy.log", flags)
				}
				shellcheckActivation(t, sys)
				nixShowConfig(t, sys.NixConf)
				return
			}
			var sys nixosSystem
			e := mustEval(t, platform, module, &sys)
			if sys.Service != nil {
				args := shellWords(t, sys.Service.ServiceConfig["ExecStart"].(string))
				checkServeArgs(t, e, "ExecStart", args[2:], flags, "/var/lib/nix-cache-proxy")
			}
		})
	}
	if n < 3 {
		t.Errorf("%d Nix examples with the modules in deploy/README.md, want the NixOS, nix-darwin and client ones: the pattern is stale", n)
	}
}
