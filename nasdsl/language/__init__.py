"""The language: space-file text → syntax tree (`syntax`, `ast`) → checked rules
(`check`, `ir`), with value expressions (`expr`), the primitive registry
(`primitives`), errors with positions (`errors`) and the printer back to text.
Imports nothing from the layers above it."""
