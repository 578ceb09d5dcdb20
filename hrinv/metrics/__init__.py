"""Evaluation metrics. :mod:`.id_retrieval`: the paper's ID-retrieval accuracy (``hrinv.id_retrieval``)."""
