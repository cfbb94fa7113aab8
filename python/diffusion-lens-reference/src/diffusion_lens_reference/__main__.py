"""`python -m diffusion_lens_reference MODE ...` is `lens-make-reference MODE ...`."""
from diffusion_lens_reference.make_reference import main

main()
