"""``seglossbrain review``: look at, correct and fine-tune on results in a web browser.

A local web app on Kitware's trame-slicer (Slicer's own MRML scene, slice views, 3D view and segment editor
effects, served to a browser from plain Python). It is a third face of the same product: the engine
(``SegLossBrainLib``: reading, label table, QC, fine-tuning, model store) and the Slicer glue
(``SegLossBrainSlicer``: labelmap <-> segmentation node, fine-tuning pairs, the fine-tune child process) are used
as they are; nothing here is a second copy of them.

One job a file: ``cases`` (what to review: one scan, or a ``batch`` results folder), ``inputs`` (bad input refused
before anything starts), ``scene`` (a case into the MRML scene), ``corrections`` (Save correction -> a pair in the
site's pairs folder), ``tuning`` (Fine-tune / Stop / Activate), ``curve`` (the validation curve as SVG),
``overlay`` (the confidence map over the slice views), ``panel`` (the side panel), ``app`` (the trame
app), ``launch`` (what ``seglossbrain review`` runs). Needs the ``review`` extra: ``pip install "seglossbrain[review]"``.
"""
