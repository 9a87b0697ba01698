"""The image domain of notebooks 00-06: Fashion-MNIST, the ResNet teacher, the CNN students, and the lessons' plumbing.

The domain's API, the same small one every domain offers::

    student = cu.images.create("cnn-9k", seed=0)        # any name of cu.images.CONFIGS
    teacher = cu.images.load_teacher()                 # the shipped "resnet-teacher", checked by sha256
    train_set = cu.images.load_fashion_mnist("train", subset=2000)
    batches = train_set.loader(batch_size=64, shuffle=True, seed=0)

Submodules: ``models`` (the architectures, the families and the teacher's card and cached logits), ``data``
(Fashion-MNIST: :class:`ImageSet`, normalisation, the checked IDX files), ``recipes`` (the course's training and
distillation recipes, notebook 02), ``transfer`` (transfer sets, notebook 02b), ``feature_kd`` (FitNets and attention
transfer, notebooks 03-04).
"""

from . import data, feature_kd, models, recipes, transfer
from .data import CLASS_NAMES, ImageSet, load_fashion_mnist
from .models import CONFIGS, create, load_teacher

__all__ = ["CLASS_NAMES", "CONFIGS", "ImageSet", "create", "data", "feature_kd", "load_fashion_mnist", "load_teacher",
           "models", "recipes", "transfer"]
