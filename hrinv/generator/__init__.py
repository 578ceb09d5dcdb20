"""StyleGAN2 generator (NVIDIA stylegan2-ada semantics and names), pure-PyTorch ops and the INR head.

Import the submodules directly (``hrinv.generator.stylegan2.Generator``); nothing heavy happens at import.
"""
