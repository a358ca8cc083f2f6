"""Settings, all read from the environment in this one module.

Two topologies (docs/ARCHITECTURE.md):
- embedded default (nothing set): SQLite file under ./var, in-memory channel layer, Celery tasks
  run eagerly and the beat schedule is run by a thread inside the ASGI process;
- production: ``DATABASE_URL`` (PostgreSQL), ``REDIS_URL`` (channels_redis, Celery broker and
  result backend, shared cache for login throttling), several ASGI processes, Celery worker + beat.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEV_SECRET_KEY = "dev-only-insecure-key-change-me-for-any-real-deployment"
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY when DEBUG is off.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = os.environ.get("SITE_URL", "http://localhost:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "allauth",
    "allauth.account",
    "portal",
    "stations",
    "billing",
    "loadmgmt",
    "auditlog",
    "audit",
]
# The audit trail (docs/ARCHITECTURE.md): django-auditlog writes our entry model, which carries
# the organization so owners read their own through the tenant queryset.
AUDITLOG_LOGENTRY_MODEL = "audit.AuditEntry"
# auditlog's migrations would create its own, unused entry table (its migrations do not mark
# it swappable); that table's key to users then breaks PostgreSQL's TRUNCATE in test flushes.
MIGRATION_MODULES = {"auditlog": None}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.middleware.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
AUTH_USER_MODEL = "portal.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "portal.context_processors.navigation",
            ],
        },
    }
]

# --- Database -----------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # Health checks: a connection kept open (CONN_MAX_AGE) is tested before its first use in
    # each request or task, so one broken by a PostgreSQL restart is replaced at once instead
    # of failing the first query after it (tests/resilience, docs/RESILIENCE.md).
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
        "DATABASE_PREPARED_STATEMENTS", True
    ):
        # Parameters bound by the server, not pasted into the SQL text: the same statement
        # text every time, so psycopg prepares a query on its 5th run on a connection and
        # PostgreSQL stops parsing and planning it again (the OCPP path runs a couple of
        # dozen statements per station; docs/BENCHMARKS.md, reconnect storm). Django leaves
        # both off for connection poolers: behind PgBouncer in transaction mode without
        # max_prepared_statements, set DATABASE_PREPARED_STATEMENTS=0.
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=5
        )
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "portal.sqlite3",
            # The OCPP path writes from many coroutines through one thread; a busy timeout
            # instead of "database is locked" when the demo's Celery-less worker writes too.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }

# HTTP requests of one ASGI process run on at most this many long-lived threads, each keeping
# its database connection between requests (portal/http_threads.py); more at once get a
# thread and a connection of their own for the request.
HTTP_THREADS = int(os.environ.get("HTTP_THREADS", "8"))

# --- Redis: channel layer, cache, Celery --------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "portal.channel_layer.BatchReceiveRedisChannelLayer",
            "CONFIG": {
                # redis-py's async pool allows 100 connections by default and raises
                # MaxConnectionsError beyond: thousands of station sockets joining their
                # groups at once after a restart need more.
                # redis-py 8 also times socket reads out after 5 s by default, the same 5 s
                # that channels_redis blocks in BZPOPMIN: under load the read loses the race
                # and the receive loop fails ("Timeout reading from ..."). Read longer.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": int(os.environ.get("REDIS_MAX_CONNECTIONS", "2000")),
                        "socket_timeout": 30,
                    }
                ],
                # Wanted state lives in the database and is re-sent; see docs/OCPP.md.
                "expiry": 60,
                "capacity": 1000,
                "prefix": os.environ.get("CHANNEL_PREFIX", "portal"),
            },
        }
    }
    CACHES = {
        "default": {
            # Django's, with one client object per pool (portal/redis_cache.py).
            "BACKEND": "portal.redis_cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_PREFIX", "portal"),
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "Europe/Zurich"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# ETA tasks (retries a moment later) are checked this often; Celery's default is 1 s.
CELERY_WORKER_TIMER_PRECISION = 0.1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fix-up closes every database connection before and after each task unless
# this is set: each recompute then started a new PostgreSQL backend (a fork, cold catalog
# caches, no prepared statements): one per organization and cycle, 127 in a 2,000-station
# reconnect storm (31 with this). The worker keeps its connections as a request handler
# does: portal/celery.py checks them around each task (CONN_MAX_AGE, health checks, errors).
CELERY_DB_REUSE_MAX = 1_000_000_000
# Without a broker the beat schedule (portal/schedule.py) runs in a thread of the ASGI process.
PERIODIC_IN_PROCESS = env_bool("PERIODIC_IN_PROCESS", not REDIS_URL)

# --- MQTT (meter readings for load management) -------------------------------------------
MQTT_URL = os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883")

# --- Auth ---------------------------------------------------------------------------------
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"

# django-allauth: e-mail login, mandatory verification; the username is the driver's
# shareable account name (portal.User.account_name).
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_FORMS = {"signup": "portal.forms.SignupForm"}
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_USERNAME_MIN_LENGTH = 3
ACCOUNT_USERNAME_VALIDATORS = "portal.models.account_name_validators"
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Charging portal] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if not DEBUG else "http"
# Rate limits (allauth's format "<count>/<period>/<ip|key|user>"; key = the e-mail): failed
# logins at most 5 per account per 5 minutes and 20 per IP per minute (then the form says
# "Too many failed login attempts", even for the right password); login posts 30 per IP per
# minute, sign-ups 10 per IP per minute and 50 per hour, password-reset mails 3 per address per
# 15 minutes and 20 per IP per minute (the rest answer 429, templates/429.html). The counters
# live in the cache: Redis, shared by all processes, in production. The client IP is
# REMOTE_ADDR: behind a proxy run Uvicorn with --forwarded-allow-ips, or set
# TRUSTED_PROXY_COUNT (docs/CONFIGURATION.md).
ACCOUNT_RATE_LIMITS = {
    "login_failed": os.environ.get("LOGIN_FAILED_RATE", "20/m/ip,5/5m/key"),
    "login": os.environ.get("LOGIN_RATE", "30/m/ip"),
    "signup": os.environ.get("SIGNUP_RATE", "10/m/ip,50/h/ip"),
    "reset_password": os.environ.get("PASSWORD_RESET_RATE", "20/m/ip,3/15m/key"),
    "reset_password_from_key": "20/m/ip",
}
ALLAUTH_TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))

# --- E-mail -------------------------------------------------------------------------------
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if os.environ.get("EMAIL_HOST")
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "portal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Internationalisation -----------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("de", _("German")), ("fr", _("French")), ("it", _("Italian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Europe/Zurich"
USE_I18N = True
USE_TZ = True

# --- Static files -------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    # Documents the {error, detail} responses of every operation (portal/api/schema.py).
    "DEFAULT_SCHEMA_CLASS": "portal.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.errors.exception_handler",
    # Every endpoint: 120 requests a minute per IP without credentials (meters pushing readings
    # over REST count here: raise API_ANON_RATE for many meters behind one address), 600 per
    # user; the token exchange 10 a minute per IP (portal.api.views.TokenView). In the cache.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_ANON_RATE", "120/min"),
        "user": os.environ.get("API_USER_RATE", "600/min"),
        "token": os.environ.get("API_TOKEN_RATE", "10/min"),
    },
    "NUM_PROXIES": int(os.environ["TRUSTED_PROXY_COUNT"])
    if os.environ.get("TRUSTED_PROXY_COUNT")
    else None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Charging portal API",
    "DESCRIPTION": "Stations, sessions, access and load management. Tenant = organization slug "
    "in the path. Errors are JSON {error, detail}.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from our own static files (drf-spectacular-sidecar), not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge from validator.swagger.io: it would send our schema's address to a third
    # party and is refused by the content security policy anyway.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
}

# --- Security -----------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
# No script reads a cookie: htmx and Swagger UI get the CSRF token from the page.
CSRF_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^ocpp/"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    LANGUAGE_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# Content security policy (django-csp 4): scripts only from our own static files (no inline
# scripts or handlers anywhere; htmx runs without eval), stylesheets only from our own files.
# Style *attributes* stay allowed (style-src-attr): a few templates and htmx's settling set
# them, and they can neither run script nor load from elsewhere (url() obeys img-src).
# connect-src names the websocket origin too: older Safari does not count ws(s):// as 'self'.
_SITE_HOST = SITE_URL.split("://", 1)[-1].split("/", 1)[0]
_WS_ORIGIN = ("wss://" if SITE_URL.startswith("https://") else "ws://") + _SITE_HOST
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        # data: the station display previews (GIFs inlined by stations/views.py) and the icons
        # Pico CSS and Swagger UI embed in their stylesheets.
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'", _WS_ORIGIN],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
if env_bool("CSP_REPORT_ONLY", False):
    # To try a policy change on a live site first: violations are reported, nothing blocked.
    CONTENT_SECURITY_POLICY_REPORT_ONLY = CONTENT_SECURITY_POLICY
    CONTENT_SECURITY_POLICY = {}

INVITATION_VALIDITY = timedelta(days=int(os.environ.get("INVITATION_VALIDITY_DAYS", "14")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"frequent_tasks": {"()": "portal.schedule.FrequentTaskFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # The ocpp library logs every frame at INFO: far too much for a fleet.
        "ocpp": {"level": os.environ.get("OCPP_LOG_LEVEL", "WARNING")},
        # Celery's INFO line for every run of the once-a-second tasks (portal/schedule.py).
        **{
            name: {"filters": ["frequent_tasks"]}
            for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat")
        },
    },
}
