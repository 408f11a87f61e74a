# What the NixOS and nix-darwin server modules share: the options of
# services.nix-cache-proxy and the config file, checked at build time.
{ lib, pkgs }:

let
  inherit (lib) mkOption types;
  doc = import ./settings.nix;
  config = import ./config-keys.nix;
  settingsFormat = pkgs.formats.toml { };

  # A key's type: settings.nix's narrower one, else from the binary's
  # table. Durations and sizes are strings with units ("1m", "200GiB"),
  # which check-config checks when the system is built.
  typeOf = section: key: k:
    let o = doc.types.${section}.${key} or { type = k.type; }; in
    {
      string = types.str;
      integer = types.int;
      boolean = types.bool;
      duration = types.str;
      size = types.str;
      "list of strings" = types.listOf types.str;
      enum = types.enum (o.values or [ ]);
      address = types.strMatching addressPattern;
    }.${o.type};
  addressPattern = "(.*):([0-9]+)";

  # [section] key as an option: unset (null) leaves it out of the file, so
  # the binary's default applies; defaults are the module's own.
  keyOption = defaults: section: key: k:
    let own = defaults.${section} or { }; in
    mkOption ({
      # A key the module sets itself cannot be unset.
      type = if own ? ${key} then typeOf section key k else types.nullOr (typeOf section key k);
      default = own.${key} or null;
      description = "${k.description} (`--${k.flag}`)."
        + lib.optionalString (doc.notes.${section} or { } ? ${key}) "\n\n${doc.notes.${section}.${key}}";
    } // lib.optionalAttrs (!(own ? ${key})) {
      defaultText = lib.literalMD "`null`: nix-cache-proxy's default, ${k.default}";
    });

  # Set keys only, in the sections that have any.
  setKeys = settings:
    lib.filterAttrs (_: keys: keys != { }) (lib.mapAttrs (_: lib.filterAttrs (_: v: v != null)) settings);
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
        nix-cache-proxy's settings, in the sections of its config file
        (docs/configuration.md): `settings.upstream.urls`,
        `settings.disk.max-size`, … Each key has an option of its type; a
        key left `null` is not written, and keeps nix-cache-proxy's
        default. The file is checked with `nix-cache-proxy check-config`
        when the system is built, so a bad value fails the build, not the
        service. Secrets do not belong here (the file is in the
        world-readable Nix store): use the `*File` options.
      '';
      default = { };
      example = doc.example;
      type = types.submodule {
        options = lib.mapAttrs (section: about: mkOption {
          description = "`[${section}]`: ${about}.";
          default = { };
          type = types.submodule {
            options = lib.mapAttrs (keyOption (doc.defaults stateDirectory) section) config.keys.${section};
          };
        }) config.sections;
      };
    };

    warm = mkOption {
      description = ''
        Flakes the server follows (the config file's `[[warm]]` tables,
        docs/operations.md, "Following a flake"): at start and every `interval` it reads
        the flake's locked revision and, when it is new, evaluates each
        attribute with `nix` (nothing is built), pins and prefetches what
        substituting it takes, and keeps the pins of each attribute's `keep`
        newest revisions. The service gets `nix` on its PATH and a cache
        directory for it; it evaluates as its own user, so it needs read
        access to the flake: a public flake, a `path:` readable by it, or
        credentials in that user's Nix configuration (`access-tokens =
        github.com=…` in `nix.settings`, or an SSH key and known_hosts for
        `git+ssh://`, readable by the service user).
      '';
      default = [ ];
      example = [{
        flake = "github:me/macs";
        attrs = [ "darwinConfigurations.studio.system" "packages.aarch64-linux.builder-image" ];
        keep = 3;
      }];
      type = types.listOf (types.submodule {
        options = {
          flake = mkOption {
            type = types.strMatching "[^#]+";
            description = "A flake reference without an attribute: `github:me/macs`, `git+ssh://git@host/macs`, `path:/srv/macs`.";
          };
          attrs = mkOption {
            type = types.nonEmptyListOf types.str;
            description = "Attributes that evaluate to derivations: `darwinConfigurations.studio.system`.";
          };
          keep = mkOption {
            type = types.ints.positive;
            default = 3;
            description = "Revisions of each attribute kept pinned; older ones are unpinned.";
          };
          interval = mkOption {
            type = types.str;
            default = "10m";
            description = "How often the flake's lock is read (a duration, 10s at least).";
          };
          timeout = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Bound on each nix command (a duration); `null`: nix-cache-proxy's default, 10m.";
          };
          max-memory = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Bound on each nix command's data segment on Linux (a size, `\"0\"` for none); `null`: nix-cache-proxy's default, 8GiB.";
          };
        };
      });
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
      file = settingsFormat.generate "nix-cache-proxy.toml"
        (setKeys cfg.settings // lib.optionalAttrs (cfg.warm != [ ]) {
          warm = map (lib.filterAttrs (_: v: v != null)) cfg.warm;
        });
      canRun = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
    in
    if !canRun then file else
    pkgs.runCommand "nix-cache-proxy-checked.toml" { } ''
      # check-config only parses and validates: it neither listens nor
      # opens the cache dir, so it runs in the build sandbox.
      ${lib.getExe cfg.package} check-config --config ${file}
      cp ${file} $out
    '';

  # The host and TCP port of settings.http.listen ("0.0.0.0:5575",
  # "[::]:5575", "localhost:5575", ":5575"), which its type guarantees
  # has the form host:port.
  listenHost = cfg: lib.elemAt (builtins.match addressPattern cfg.settings.http.listen) 0;
  listenPort = cfg: lib.toInt (lib.elemAt (builtins.match addressPattern cfg.settings.http.listen) 1);

  # The flags passing the secret files that are set, each path given by
  # pathOf (secret name, its attributes, the configured path).
  secretFlags = cfg: pathOf: lib.concatLists (lib.mapAttrsToList (name: s:
    lib.optionals (cfg.${name} != null) [ "--${s.flag}" (pathOf name s cfg.${name}) ]
  ) doc.secrets);
}
