"""Pixel codecs: transfer-syntax rules, lossless HTJ2K/JPEG 2000 encode/decode, JPH file wrapping."""
