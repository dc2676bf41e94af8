"""Image code both sides use: tiles, saliency, light SR (Real-ESRGAN without torch),
colour correction, stitching and composition.

Depends on `hybridsr.protocol` only; never on the SDK or the server, and never on torch.
"""
