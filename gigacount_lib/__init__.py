"""gigacount_lib: a teaching re-implementation of GigaCount (CLIP-EBC + multi-scale fusion).

Subjects and their homes (one module per notebook subject):

* ``gigacount_lib.data``      datasets, synthetic crowds, density maps, augmentations  (notebook 01)
* ``gigacount_lib.binning``   block counts, bins, anchor points, ``BinConfig``          (notebook 02)
* ``gigacount_lib.models``    ConvNeXt encoder, ODConv attention, fusion, CLIP head    (notebook 03)
* ``gigacount_lib.losses``    CE, probability-Euclidean, DM-Count OT, DACE, hybrid     (notebook 04)
* ``gigacount_lib.steps``     the stages of one training step, optimiser, schedules     (notebook 05)
* ``gigacount_lib.train``     the Trainer: the training loop                            (notebook 05)
"""
__version__ = "0.1.0"
