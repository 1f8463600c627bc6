"""OpenAI's Uploads API: a big file sent in parts (each retriable), completed into a file."""
