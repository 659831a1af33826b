"""``python -m benchmarks.send_batch DIR``: send DIR/nftables.batch to the kernel of the current
network namespace, as ``tortie apply`` does for a full replacement (run it under
``ip netns exec``). Exit status 1 if the batch does not encode DIR/nftables.nft or the kernel
refuses it. A separate process so that the benchmark times what a node pays: interpreter start,
reading the file, one ``sendmsg``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtime import nftables_netlink


def main() -> int:
    art = Path(sys.argv[1])
    script = (art / "nftables.nft").read_text()
    batch = nftables_netlink.read_batch((art / "nftables.batch").read_bytes(), script)
    if batch is None:
        print("nftables.batch does not encode nftables.nft", file=sys.stderr)
        return 1
    nftables_netlink.send_batch(batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
