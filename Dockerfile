# The readside image: workers (`readside worker`) and one-shot commands.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY pipeline ./pipeline
COPY connectors ./connectors
COPY transforms ./transforms
COPY query ./query
RUN pip install --no-cache-dir .
COPY deploy/readside.compose.yaml /etc/readside/readside.yaml
ENV READSIDE_CONFIG=/etc/readside/readside.yaml
EXPOSE 9464
ENTRYPOINT ["readside"]
CMD ["worker"]
