"""Retrieval for the RAG rungs and nearest-example few-shot: corpus loading and chunking (corpus),
embeddings with a disk cache (embed), BM25 / dense / hybrid search and recall@k (index)."""
