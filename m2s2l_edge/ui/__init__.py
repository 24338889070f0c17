"""The web view of a running watch (``watch --ui``): live cameras, score timelines, events, health, the threshold and
the regions of interest, served from what the watch publishes (:class:`m2s2l_edge.watch.live.LiveFeed`).

Needs the ``[ui]`` extra (Starlette, uvicorn, ruamel.yaml): ``pip install 'm2s2l-edge[ui]'``. Nothing here is
imported by ``import m2s2l_edge`` or the CLI's ``--help``.
"""

INSTALL_UI = "pip install 'm2s2l-edge[ui]'"
