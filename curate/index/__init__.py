"""Search structures over compact keys: Hamming range search and union-find clustering."""
