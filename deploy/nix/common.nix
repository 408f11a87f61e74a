# What the NixOS and nix-darwin server modules share: the options of
# services.nix-cache-proxy and the config file, checked at build time.
{ lib, pkgs }:

let
  inherit (lib) mkOption types;
  doc = import ./settings.nix;
  settingsFormat = pkgs.formats.toml { };
  # settings.nix names each option's type: a lib.types type, or "enum"
  # with its values, or "address" (host:port, as Go's net.Listen takes it).
  typeOf = o: {
    str = types.str;
    int = types.int;
    bool = types.bool;
    "listOf str" = types.listOf types.str;
    enum = types.enum (o.values or [ ]);
    address = types.strMatching addressPattern;
  }.${o.type};
  addressPattern = "(.*):([0-9]+)";
in
rec {
  inherit (doc) secrets;

  # The options of services.nix-cache-proxy; stateDirectory is where the
  # platform keeps the cache by default.
  options = { defaultPackage, stateDirectory }: {
    enable = lib.mkEnableOption "nix-cache-proxy, a LAN binary cache for Nix that pulls from upstream caches";

    package = mkOption {
      type = types.package;
      default = defaultPackage;
      defaultText = lib.literalMD "this flake's `packages.\${system}.default`";
      description = "The nix-cache-proxy package to run.";
    };

    settings = mkOption {
      description = ''
        nix-cache-proxy's settings, written as the TOML file given to
        `--config`: every key is a flag of `nix-cache-proxy serve -h`
        (`upstream`, `trusted-public-key`, `negative-ttl`, `pin`, …). The
        file is checked with `nix-cache-proxy check-config` when the
        system is built, so an unknown key or a bad value fails the build,
        not the service. Secrets do not belong here (the file is in the
        world-readable Nix store): use the `*File` options.
      '';
      default = { };
      example = doc.example;
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = lib.mapAttrs (_: o: mkOption {
          type = typeOf o;
          inherit (o) default description;
        }) (doc.options stateDirectory);
      };
    };
  } // lib.mapAttrs (_: s: mkOption {
    type = types.nullOr types.str;
    default = null;
    example = "/run/secrets/nix-cache-proxy-${s.credential}";
    description = s.description + ''

      A path as a string, read when the service starts: the file is not
      copied into the Nix store.
    '';
  }) doc.secrets;

  # The settings as a TOML file, run through the package's check-config
  # (as nixpkgs' atticd module checks its config) unless the build
  # platform cannot run the package.
  configFile = cfg:
    let
      file = settingsFormat.generate "nix-cache-proxy.toml" (doc.toSections cfg.settings);
      canRun = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
    in
    if !canRun then file else
    pkgs.runCommand "nix-cache-proxy-checked.toml" { } ''
      # check-config only parses and validates: it neither listens nor
      # opens the cache dir, so it runs in the build sandbox.
      ${lib.getExe cfg.package} check-config --config ${file}
      cp ${file} $out
    '';

  # The host and TCP port of settings.listen ("0.0.0.0:5575",
  # "[::]:5575", "localhost:5575", ":5575"), which its type guarantees
  # has the form host:port.
  listenHost = cfg: lib.elemAt (builtins.match addressPattern cfg.settings.listen) 0;
  listenPort = cfg: lib.toInt (lib.elemAt (builtins.match addressPattern cfg.settings.listen) 1);

  # The flags passing the secret files that are set, each path given by
  # pathOf (secret name, its attributes, the configured path).
  secretFlags = cfg: pathOf: lib.concatLists (lib.mapAttrsToList (name: s:
    lib.optionals (cfg.${name} != null) [ "--${s.flag}" (pathOf name s cfg.${name}) ]
  ) doc.secrets);
}
