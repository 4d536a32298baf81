"""`ray start` for the tests' cluster on 127.0.0.1 alone: `python tests/ray_node.py start
…` with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment.

That variable keeps Ray's addresses on the loopback (otherwise Ray replaces 127.0.0.1 by
this machine's network address and its servers listen on every interface), but its CLI
then refuses to add a second node. Here the refusal alone is lifted (the CLI's own copy of
the constant), so a head and a worker node both run on 127.0.0.1 and nothing listens
elsewhere (tests/test_cluster.py checks that)."""

import sys
import types

import ray.scripts.scripts as cli

if __name__ == "__main__":
    names = {k: getattr(cli.ray_constants, k) for k in dir(cli.ray_constants)
             if not k.startswith("__")}
    cli.ray_constants = types.SimpleNamespace(**{**names, "ENABLE_RAY_CLUSTER": True})
    sys.argv = ["ray", *sys.argv[1:]]
    cli.main()
