"""Networks shared by metrics and methods (design §2): IR-SE50 (``irse50``), StyleGAN2.

Nothing is imported here, so ``import reenactbench.nn`` stays light: import the
submodule you need (``from reenactbench.nn.irse50 import Backbone``), which imports torch.
"""

__all__: list[str] = []
