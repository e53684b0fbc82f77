{{/* Chart name. */}}
{{- define "wdt-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "wdt-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wdt-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wdt-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wdt-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wdt-gateway.labels" -}}
helm.sh/chart: {{ include "wdt-gateway.chart" . }}
{{ include "wdt-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wdt-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wdt-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the pods read: existingSecret, or the one this chart renders. */}}
{{- define "wdt-gateway.secretName" -}}
{{- default (include "wdt-gateway.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "wdt-gateway.configPath" -}}/etc/wdt-gateway/config.toml{{- end }}
{{- define "wdt-gateway.secretDir" -}}/var/run/secrets/wdt-gateway{{- end }}

{{/*
The secret files the pods get, as JSON {"files": [{key, path, env, value}, ...]}: `key` is the key
in the Secret, `path` the file name under secretDir, `env` the *_FILE variable naming it, `value`
the secret itself when this chart renders the Secret. A secret is
used only where the gateway needs it: an appsecret when its family's url is set, the JWT secret
when auth.jwksUrl is empty (the two are exclusive), the Redis URL when redis.enabled is true.
*/}}
{{- define "wdt-gateway.secretFiles" -}}
{{- $v := .Values -}}
{{- $candidates := list
  (dict "used" (not (empty $v.vendor.flagship.url)) "value" $v.secrets.flagshipAppsecret "existingKey" $v.existingSecretKeys.flagshipAppsecret "key" "flagship-appsecret" "env" "WDT_APPSECRET_FILE")
  (dict "used" (not (empty $v.vendor.enterprise.url)) "value" $v.secrets.enterpriseAppsecret "existingKey" $v.existingSecretKeys.enterpriseAppsecret "key" "enterprise-appsecret" "env" "WDT_ENTERPRISE_APPSECRET_FILE")
  (dict "used" (empty $v.auth.jwksUrl) "value" $v.secrets.jwtSecret "existingKey" $v.existingSecretKeys.jwtSecret "key" "jwt-secret" "env" "WDT_GATEWAY_JWT_SECRET_FILE")
  (dict "used" $v.redis.enabled "value" $v.secrets.redisUrl "existingKey" $v.existingSecretKeys.redisUrl "key" "redis-url" "env" "WDT_GATEWAY_REDIS_URL_FILE")
-}}
{{- $files := list -}}
{{- range $candidates -}}
{{- $key := "" -}}
{{- if $v.existingSecret -}}
{{- $key = .existingKey -}}
{{- else if and $v.secrets.create .value -}}
{{- $key = .key -}}
{{- end -}}
{{- if and .used $key -}}
{{- $files = append $files (dict "key" $key "path" .key "env" .env "value" .value) -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "files" $files) -}}
{{- end }}

{{/* Whether a secret file with this path (e.g. "jwt-secret") is mounted. */}}
{{- define "wdt-gateway.hasSecretFile" -}}
{{- $files := (include "wdt-gateway.secretFiles" .root | fromJson).files -}}
{{- range $files }}{{ if eq .path $.path }}true{{ end }}{{ end -}}
{{- end }}

{{/*
The replicas that share Redis (WDT_GATEWAY_REPLICAS): redis.replicas when set, else the most the
HPA may run (autoscaling.maxReplicas), else replicaCount. While Redis is unavailable each replica
keeps to this share of every vendor quota and client limit, so it must not be below the pods that
actually run.
*/}}
{{- define "wdt-gateway.redisReplicas" -}}
{{- $v := .Values -}}
{{- if and (not (kindIs "invalid" $v.redis.replicas)) (ne (toString $v.redis.replicas) "") -}}
{{- int64 $v.redis.replicas -}}
{{- else if $v.autoscaling.enabled -}}
{{- max 1 (int64 $v.autoscaling.maxReplicas) -}}
{{- else -}}
{{- max 1 (int64 $v.replicaCount) -}}
{{- end -}}
{{- end }}

{{/*
Plain environment variables as a JSON list of {name, value}; a variable whose value is empty or
null is left out (0 is kept: it turns a limit off).
*/}}
{{- define "wdt-gateway.env" -}}
{{- $v := .Values -}}
{{- $replicas := "" -}}
{{- if $v.redis.enabled -}}
{{- $replicas = include "wdt-gateway.redisReplicas" . -}}
{{- end -}}
{{- $vars := list
  (list "WDT_FLAGSHIP_URL" $v.vendor.flagship.url)
  (list "WDT_SID" $v.vendor.flagship.sid)
  (list "WDT_APPKEY" $v.vendor.flagship.appkey)
  (list "WDT_ENTERPRISE_URL" $v.vendor.enterprise.url)
  (list "WDT_ENTERPRISE_SID" $v.vendor.enterprise.sid)
  (list "WDT_ENTERPRISE_APPKEY" $v.vendor.enterprise.appkey)
  (list "WDT_GATEWAY_JWKS_URL" $v.auth.jwksUrl)
  (list "WDT_GATEWAY_JWT_ISSUER" $v.auth.issuer)
  (list "WDT_GATEWAY_JWT_AUDIENCE" $v.auth.audience)
  (list "WDT_GATEWAY_CLIENT_RATE_LIMIT" $v.limits.clientRateLimit)
  (list "WDT_GATEWAY_VENDOR_CALLS_PER_MINUTE" $v.limits.vendorCallsPerMinute)
  (list "WDT_GATEWAY_LOG_FORMAT" $v.logFormat)
  (list "WDT_GATEWAY_LOG" $v.logLevel)
  (list "WDT_GATEWAY_OTLP_ENDPOINT" $v.otlp.endpoint)
  (list "WDT_GATEWAY_REPLICAS" $replicas)
  (list "WDT_GATEWAY_TENANTS_FILE" (ternary (printf "%s/%s" (include "wdt-gateway.tenantsDir" .) $v.tenants.fileKey) "" (not (empty $v.tenants.existingSecret))))
  (list "WDT_GATEWAY_TENANT_CLAIM" $v.tenants.claim)
  (list "WDT_GATEWAY_CHANGE_FEED_INTERVAL" $v.changeFeed.interval)
  (list "WDT_GATEWAY_STATE_DIR" "/var/lib/wdt-gateway")
  (list "WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS" $v.webhooks.allowPrivateNetworks)
-}}
{{- $env := list -}}
{{- range $vars -}}
{{- $value := index . 1 -}}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) -}}
{{- $value = int64 $value -}}{{/* YAML numbers are floats: 1000000, not 1e+06 */}}
{{- end -}}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") -}}
{{- $env = append $env (dict "name" (index . 0) "value" (toString $value)) -}}
{{- end -}}
{{- end -}}
{{- toJson $env -}}
{{- end }}

{{/* Refuses values that cannot work, naming the value to fix. Included by the Deployment. */}}
{{- define "wdt-gateway.validate" -}}
{{- $v := .Values -}}
{{- $existing := $v.existingSecret -}}
{{- $families := list
  (dict "name" "flagship" "cfg" $v.vendor.flagship "secret" "flagshipAppsecret" "path" "flagship-appsecret")
  (dict "name" "enterprise" "cfg" $v.vendor.enterprise "secret" "enterpriseAppsecret" "path" "enterprise-appsecret")
-}}
{{- range $family := $families }}
{{- $cfg := .cfg }}
{{- if or $cfg.url $cfg.sid $cfg.appkey }}
{{- range $field := list "url" "sid" "appkey" }}
{{- if empty (get $cfg $field) }}
{{- fail (printf "vendor.%s.%s is empty: the %s API needs url, sid, appkey and an appsecret together" $family.name $field $family.name) }}
{{- end }}
{{- end }}
{{- if not (include "wdt-gateway.hasSecretFile" (dict "root" $ "path" .path)) }}
{{- if $existing }}
{{- fail (printf "vendor.%s.url is set but existingSecretKeys.%s is empty: name the key of %q that holds the %s appsecret" .name .secret $existing .name) }}
{{- else }}
{{- fail (printf "vendor.%s.url is set but there is no appsecret: set existingSecret (recommended) or secrets.create=true with secrets.%s" .name .secret) }}
{{- end }}
{{- end }}
{{- else if and (not $existing) (get $v.secrets .secret) }}
{{- fail (printf "secrets.%s is set but vendor.%s.url is empty" .secret .name) }}
{{- end }}
{{- end }}
{{- if $existing }}
{{- if or $v.secrets.flagshipAppsecret $v.secrets.enterpriseAppsecret $v.secrets.jwtSecret $v.secrets.redisUrl }}
{{- fail "existingSecret is set: leave secrets.flagshipAppsecret, secrets.enterpriseAppsecret, secrets.jwtSecret and secrets.redisUrl empty (put them in that Secret)" }}
{{- end }}
{{- end }}
{{- if $v.redis.enabled }}
{{- if not (include "wdt-gateway.hasSecretFile" (dict "root" . "path" "redis-url")) }}
{{- if $existing }}
{{- fail (printf "redis.enabled is true but existingSecretKeys.redisUrl is empty: name the key of %q that holds the Redis URL" $existing) }}
{{- else }}
{{- fail "redis.enabled is true but there is no Redis URL: set existingSecret with a redis-url key (recommended) or secrets.create=true with secrets.redisUrl" }}
{{- end }}
{{- end }}
{{- if and (not $existing) $v.secrets.redisUrl (not (regexMatch "^(redis|rediss|redis\\+unix|unix|valkey|valkeys)://" $v.secrets.redisUrl)) }}
{{- fail "secrets.redisUrl must start with redis://, rediss:// (TLS) or redis+unix://; Cluster and Sentinel URLs are not supported: point it at one primary or a proxy" }}
{{- end }}
{{- $explicit := and (not (kindIs "invalid" $v.redis.replicas)) (ne (toString $v.redis.replicas) "") }}
{{- $replicas := int64 (include "wdt-gateway.redisReplicas" .) }}
{{- if or (lt $replicas 1) (gt $replicas 1000) }}
{{- if $explicit }}
{{- fail (printf "redis.replicas must be between 1 and 1000, not %d" $replicas) }}
{{- else }}
{{- fail (printf "WDT_GATEWAY_REPLICAS would be %d (autoscaling.maxReplicas or replicaCount): the gateway accepts 1 to 1000; set redis.replicas" $replicas) }}
{{- end }}
{{- end }}
{{- $running := ternary (dict "name" "autoscaling.maxReplicas" "n" $v.autoscaling.maxReplicas) (dict "name" "replicaCount" "n" $v.replicaCount) (eq $v.autoscaling.enabled true) }}
{{- if and $explicit (lt $replicas (int64 $running.n)) }}
{{- fail (printf "redis.replicas (%d) is below %s (%d): while Redis is unavailable the replicas together would exceed the vendor quota and client limits; leave redis.replicas empty or raise it" $replicas $running.name (int64 $running.n)) }}
{{- end }}
{{- else if and (not $existing) $v.secrets.redisUrl }}
{{- fail "secrets.redisUrl is set but redis.enabled is false" }}
{{- end }}
{{- if regexMatch "(?ms)^\\s*\\[redis\\][^\\[]*^\\s*url\\s*=" $v.configToml }}
{{- fail "configToml: leave the Redis URL out (it may hold a password); set redis.enabled with existingSecret's redis-url key or secrets.redisUrl" }}
{{- end }}
{{- if $v.auth.jwksUrl }}
{{- $loopback := or (hasPrefix "http://127.0.0.1" $v.auth.jwksUrl) (hasPrefix "http://localhost" $v.auth.jwksUrl) (hasPrefix "http://[::1]" $v.auth.jwksUrl) }}
{{- if not (or (hasPrefix "https://" $v.auth.jwksUrl) $loopback) }}
{{- fail "auth.jwksUrl must be an https:// URL (plain http only on loopback, e.g. a sidecar)" }}
{{- end }}
{{- if and (not $existing) $v.secrets.jwtSecret }}
{{- fail "set either auth.jwksUrl or secrets.jwtSecret, not both" }}
{{- end }}
{{- else }}
{{- if and (not $existing) $v.secrets.create $v.secrets.jwtSecret (lt (len $v.secrets.jwtSecret) 32) }}
{{- fail "secrets.jwtSecret must be at least 32 characters long" }}
{{- end }}
{{- if and (or $v.vendor.flagship.url $v.vendor.enterprise.url $v.tenants.existingSecret) (not (include "wdt-gateway.hasSecretFile" (dict "root" . "path" "jwt-secret"))) }}
{{- fail "no way to check tokens: set auth.jwksUrl, or a JWT secret (secrets.jwtSecret, or existingSecret with existingSecretKeys.jwtSecret)" }}
{{- end }}
{{- end }}
{{- if regexMatch "(?m)^\\s*listen\\s*=" $v.configToml }}
{{- fail "configToml: leave out `listen`; the chart sets WDT_GATEWAY_LISTEN to 0.0.0.0:8080" }}
{{- end }}
{{- if regexMatch "(?m)^\\s*(appsecret|jwt_secret)\\s*=" $v.configToml }}
{{- fail "configToml: secrets do not belong in the ConfigMap; use existingSecret or secrets.*" }}
{{- end }}
{{- if and $v.tenants.existingSecret (not (regexMatch "^[A-Za-z0-9._-]+$" (toString $v.tenants.fileKey))) }}
{{- fail "tenants.fileKey must name a key of the tenants Secret (letters, digits, '.', '_', '-')" }}
{{- end }}
{{- if regexMatch "(?m)^\\s*tenants_file\\s*=" $v.configToml }}
{{- fail "configToml: leave out `tenants_file`; set tenants.existingSecret and the chart mounts it" }}
{{- end }}
{{- if not (has $v.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat must be json or text, not %q" (toString $v.logFormat)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}

{{/* Where the tenants Secret is mounted. */}}
{{- define "wdt-gateway.tenantsDir" -}}
/var/run/secrets/wdt-gateway-tenants
{{- end }}
