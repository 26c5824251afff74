"""S-LLMR: selective LLM-guided regularization (arXiv 2512.21526).

Offline LLM pairwise supervision on backbone candidates (:mod:`.candidates`, :mod:`.teachers`), a gate that
predicts where the teacher is reliable (:mod:`.gate`), and a gated pairwise ranking regularizer added to any
neural backbone's loss (:mod:`.loss`). :mod:`.experiment` runs the whole comparison and writes the report.
"""
