"""Retrieval datasets other than Cars196 read from their original files, and shared sample-data parts.

May import core/ and the sibling components' pure modules; never pipeline/, trainer/, serving/.
"""
