"""BGP through BIRD 2: what Calico's confd does, as plain Python stages.

- :mod:`.peers` and :mod:`.build`: resources (Node, BGPConfiguration, BGPPeer, IPPool) and
  the node's IPAM blocks -> :class:`.model.BirdConfig`, plain frozen data;
- :mod:`.render`: that data -> ``bird.cfg`` text through ``templates/bird.cfg.j2``;
- :mod:`.reload`: the text -> a running BIRD (atomic write, ``bird -p -c``, ``birdc configure``
  only on change, start when not running).

One configuration file serves both address families: BIRD 2 runs IPv4 and IPv6 channels in
one daemon, so there is no ``bird6.cfg`` (Calico's BIRD 1.x needed two daemons). Each family
has its own filters, static and kernel protocols and sessions, named with a ``_v4``/``_v6``
suffix. Every ``bird``/``birdc`` invocation goes through :mod:`compiler.tools.bird`.

Usage::

    text = render_node(resources, "node-a", state.sorted_blocks(), sink, secrets=secrets)
    apply_config(text, BirdPaths.in_dir("/var/lib/tortie/bird"))
"""
