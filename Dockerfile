# One image for web and worker; the GPU worker uses the same code on an NVIDIA runtime.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*
COPY requirements/lock.txt requirements/lock.txt
# The CPU wheel of torch (the lock pins torch==2.13.0); a GPU image installs the CUDA wheel instead.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url ${TORCH_INDEX} -r requirements/lock.txt
COPY . .
# The image runs the production settings (SECRET_KEY and ALLOWED_HOSTS required at run time);
# docker-compose.yml names its own. The build-only values below exist for collectstatic alone.
ENV DJANGO_SETTINGS_MODULE=config.settings.production
RUN SECRET_KEY=build-only ALLOWED_HOSTS=build-only python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
