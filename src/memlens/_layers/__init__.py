"""Layer-level metrics (:func:`memlens.layers`); the logic lives in :mod:`._report`."""
