# Evaluates the flake's modules with the real module systems and returns
# what they generate, for deploy/modules_eval_test.go:
#
#   darwin MODULES  nix-darwin itself (its eval-config.nix and module list:
#                   users, launchd, activation scripts, nix.settings) with
#                   darwinModules.default and darwinModules.client
#   nixos MODULES   nixpkgs' lib.evalModules with nixosModules.default and
#                   nixosModules.client, and stand-ins for the NixOS
#                   options they set (full nixpkgs is not at hand)
#
# Both use a stub pkgs (stub-pkgs.nix). `src` holds nixpkgs-lib/ (nixpkgs'
# lib alone) and nix-darwin/ (see deploy/README.md). The flake's outputs
# are taken from flake.nix with that lib, as `nix flake check` would.
{ src }:

let
  lib = import (src + "/nixpkgs-lib/lib");
  flake = (import ../../../flake.nix).outputs { self = flake; nixpkgs = { inherit lib; }; };
  inherit (lib) mkOption types;

  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  darwin = modules:
    let
      pkgs = import ./stub-pkgs.nix { inherit lib; system = "aarch64-darwin"; };
      eval = import (src + "/nix-darwin/eval-config.nix") {
        inherit lib;
        modules = [
          {
            _module.args.pkgs = lib.mkForce pkgs;
            nixpkgs.hostPlatform = "aarch64-darwin";
            system.stateVersion = 6;
          }
          flake.darwinModules.default
          flake.darwinModules.client
        ] ++ modules;
      };
      inherit (eval) config;
      # Forcing it checks nix-darwin's assertions, as darwin-rebuild does.
      toplevel = config.system.build.toplevel;
    in
    {
      activate = toplevel.activationScript;
      inherit (toplevel) buildCommand;
      plists = lib.mapAttrs (_: f: f.text) config.environment.launchDaemons;
      nixConf = config.environment.etc."nix/nix.conf".source.text;
      users = lib.filterAttrs (name: _: lib.hasPrefix "_nix-cache" name) config.users.users;
      inherit (config) warnings;
      options = lib.attrNames eval.options.services.nix-cache-proxy;
    };

  # Stand-ins for the NixOS options the modules set, typed as NixOS types
  # them.
  nixosOptions = { config, ... }: {
    options = {
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            description = mkOption { type = types.str; default = ""; };
            wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
            after = mkOption { type = types.listOf types.str; default = [ ]; };
            wants = mkOption { type = types.listOf types.str; default = [ ]; };
            path = mkOption { type = types.listOf types.package; default = [ ]; };
            environment = mkOption { type = types.attrsOf types.str; default = { }; };
            serviceConfig = mkOption {
              type = types.attrsOf (types.oneOf [ types.bool types.int types.str (types.listOf types.str) ]);
              default = { };
            };
          };
        });
        default = { };
      };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      nix.enable = mkOption { type = types.bool; default = true; };
      nix.package = mkOption { type = types.package; default = config._module.args.pkgs.nix; };
      nix.settings = mkOption {
        type = types.submodule {
          freeformType = types.attrsOf (types.oneOf [ types.bool types.int types.str (types.listOf types.str) ]);
        };
        default = { };
      };
    };
    config._module.args.pkgs = import ./stub-pkgs.nix { inherit lib; system = "x86_64-linux"; };
  };

  nixos = modules:
    let
      eval = lib.evalModules {
        class = "nixos";
        modules = [ nixosOptions flake.nixosModules.default flake.nixosModules.client ] ++ modules;
      };
      inherit (eval) config;
      failed = failedAssertions config;
    in
    if failed != [ ] then throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}" else
    {
      service = config.systemd.services.nix-cache-proxy or null;
      relayService = config.systemd.services.nix-cache-proxy-relay or null;
      ports = config.networking.firewall.allowedTCPPorts;
      nixSettings = config.nix.settings;
      inherit (config) warnings;
      options = lib.attrNames eval.options.services.nix-cache-proxy;
      declarations = eval.options.services.nix-cache-proxy.enable.declarations;
      # The options' documentation, as the NixOS manual renders it.
      docs = lib.listToAttrs (map (o: lib.nameValuePair o.name { inherit (o) description type; default = o.default or null; })
        (lib.optionAttrSetToDocList eval.options.services.nix-cache-proxy));
    };
in
{
  inherit darwin nixos flake;
}
