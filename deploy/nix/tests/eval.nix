# Evaluates the modules and the package with nixpkgs' lib alone, against
# stand-ins for the NixOS / nix-darwin options they set and for pkgs, and
# returns what they generate. It catches mistakes in the modules' own
# logic and their use of lib (option types, merging, the generated unit and
# plist), not wrong names of NixOS or nix-darwin options.
#
#   nix-instantiate --eval --strict --json deploy/nix/tests/eval.nix \
#     --arg lib 'import /path/to/nixpkgs/lib'
#
# (nixpkgs' lib alone is github:nix-community/nixpkgs.lib.) CI cannot fetch
# it, so this runs by hand; deploy/README.md says when it last did.
{ lib }:

let
  inherit (lib) mkOption types;
  anything = types.attrsOf types.anything;

  package = {
    type = "derivation";
    name = "nix-cache-proxy-test";
    outPath = "/nix/store/00000000000000000000000000000000-nix-cache-proxy-test";
    meta.mainProgram = "nix-cache-proxy";
  };
  pkgs = {
    formats.toml = { }: {
      type = types.attrsOf types.anything;
      generate = name: value: builtins.toFile name (builtins.toJSON value);
    };
    runCommand = name: env: script: builtins.toFile name script;
    stdenv = {
      hostPlatform.system = "test";
      buildPlatform.canExecute = _: true;
    };
  };

  # Stand-ins for the options of NixOS and nix-darwin the modules set.
  platform = {
    options = {
      systemd.services = mkOption { type = types.attrsOf anything; default = { }; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      users.users = mkOption { type = types.attrsOf anything; default = { }; };
      users.groups = mkOption { type = types.attrsOf anything; default = { }; };
      users.knownUsers = mkOption { type = types.listOf types.str; default = [ ]; };
      users.knownGroups = mkOption { type = types.listOf types.str; default = [ ]; };
      system.activationScripts = mkOption {
        type = types.attrsOf (types.submodule { options.text = mkOption { type = types.lines; default = ""; }; });
        default = { };
      };
      launchd.daemons = mkOption {
        type = types.attrsOf (types.submodule { options.serviceConfig = mkOption { type = anything; default = { }; }; });
        default = { };
      };
      nix.settings = mkOption { type = anything; default = { }; };
    };
    config._module.args.pkgs = pkgs;
  };

  server = {
    services.nix-cache-proxy = {
      enable = true;
      openFirewall = true;
      netrcFile = "/run/secrets/netrc";
      adminTokenFile = "/run/secrets/admin-token";
      settings = {
        listen = "[::]:5599";
        upstream = [ "https://mycache.cachix.org" "https://cache.nixos.org" ];
        priority = 20;
      };
    };
  };

  eval = module: (lib.evalModules {
    modules = [ platform module server ];
  }).config;

  nixos = eval (import ../nixos.nix { packageFor = _: package; });
  darwin = eval (import ../darwin.nix { packageFor = _: package; });
  client = (lib.evalModules {
    modules = [
      platform
      ../client.nix
      { nix-cache-proxy.client = { enable = true; url = "http://cache.lan:5575"; publicKeys = [ "k-1:x" ]; }; }
    ];
  }).config;
  pkg = import ../package.nix {
    inherit lib;
    buildGoModule = attrs: attrs // { srcPath = "${attrs.src}"; };
    version = "test";
    commit = "0000";
  };
in
{
  nixos = {
    service = nixos.systemd.services.nix-cache-proxy;
    ports = nixos.networking.firewall.allowedTCPPorts;
    settings = nixos.services.nix-cache-proxy.settings;
    checkScript = builtins.readFile (lib.elemAt (lib.splitString " " nixos.systemd.services.nix-cache-proxy.serviceConfig.ExecStart) 3);
  };
  darwin = {
    daemon = darwin.launchd.daemons.nix-cache-proxy.serviceConfig;
    users = darwin.users;
    activation = darwin.system.activationScripts.launchd.text;
  };
  client = client.nix.settings;
  package = { inherit (pkg) pname version vendorHash subPackages ldflags postInstall; }
    # lib.fileset needs builtins.readFileType (Nix >= 2.14).
    // lib.optionalAttrs (builtins ? readFileType) { src = builtins.attrNames (builtins.readDir pkg.srcPath); };
}
