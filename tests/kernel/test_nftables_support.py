"""Old home of the nftables kernel-test support, kept as an alias only while
``tests/kernel/test_cluster_policy.py`` (being written in parallel) still imports ``describe``
from here. The code lives in :mod:`tests.support.topology` and :mod:`tests.support.compare`;
delete this module once nothing imports it.
"""

from tests.support.compare import describe_verdict as describe
from tests.support.compare import mismatch_report, run_and_compare
from tests.support.topology import NftTopology as Topology

__all__ = ["Topology", "describe", "mismatch_report", "run_and_compare"]
