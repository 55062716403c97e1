"""``memlens ui``: a local web page for estimates (see :mod:`memlens.ui.app`)."""
