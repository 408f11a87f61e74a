# The relay's command line for the client modules (roaming = true): the
# configured cache, loopback, and with discover the keys a discovered
# cache must advertise.
{ lib, cfg }:

[ (lib.getExe cfg.relay.package) "relay" "--cache" cfg.url "--listen" cfg.relay.listen ]
++ lib.optionals cfg.relay.discover ([ "--discover" ] ++ lib.concatMap (k: [ "--trusted-public-key" k ]) cfg.publicKeys)
