"""Tweety Studio core: Qt-free trans-tokenization library.

Stages (one module each): resources → tokenizer → align → mapping → init → evaluate. Every long function takes a
`progress` callback and a `cancel` token (see `core.jobs`) and writes its outputs atomically.
"""
