FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv/ticketing
RUN useradd --create-home --uid 10001 ticketing
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY worker ./worker
COPY kernel ./kernel
COPY cli ./cli
# The demo (`ticketing demo`) loads the fakes; the API and the worker never do.
COPY devtools ./devtools
COPY sql ./sql
COPY migrations ./migrations
# Editable install: the runtime reads sql/ and migrations/ beside the code.
RUN pip install --no-cache-dir -c constraints.txt -e . && mkdir -p var && chown ticketing var
USER ticketing
EXPOSE 8000
CMD ["ticketing", "serve", "--host", "0.0.0.0", "--port", "8000"]
