{{/* Names, labels and the values several templates derive. */}}

{{- define "lora-gateway.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lora-gateway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lora-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "lora-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "lora-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lora-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lora-gateway.gatewaySelector" -}}
{{ include "lora-gateway.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "lora-gateway.engineSelector" -}}
app.kubernetes.io/name: {{ include "lora-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: engine
{{- end -}}

{{- define "lora-gateway.gatewayImage" -}}
{{- printf "%s:%s" .Values.gateway.image.repository (default .Chart.AppVersion .Values.gateway.image.tag) -}}
{{- end -}}

{{- define "lora-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lora-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lora-gateway.secretName" -}}
{{- default (printf "%s-secrets" (include "lora-gateway.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "lora-gateway.adaptersClaim" -}}
{{- default (printf "%s-adapters" (include "lora-gateway.fullname" .)) .Values.adapters.persistence.existingClaim -}}
{{- end -}}

{{- define "lora-gateway.adaptersPath" -}}
{{- printf "%s/adapters" (trimSuffix "/" .Values.adapters.dataDir) -}}
{{- end -}}

{{/* The gateway's engine pool (ENGINE_URLS): every engine pod of the StatefulSet by its stable DNS name
     (<name>-engine-<i>.<headless Service>.<namespace>.svc.cluster.local, i = 0 … engines.replicas-1), or the
     external endpoint(s) of externalEngine.url: one URL, a comma-separated list or a YAML list. */}}
{{- define "lora-gateway.engineUrls" -}}
{{- if .Values.engines.enabled -}}
{{- $replicas := int .Values.engines.replicas -}}
{{- if lt $replicas 1 -}}
{{- fail "engines.replicas must be at least 1 (or engines.enabled=false with externalEngine.url)" -}}
{{- end -}}
{{- $engine := printf "%s-engine" (include "lora-gateway.fullname" .) -}}
{{- $urls := list -}}
{{- range $i := until $replicas -}}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.cluster.local:8000" $engine $i $engine $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- $url := .Values.externalEngine.url -}}
{{- if kindIs "slice" $url -}}
{{- $url = join "," $url -}}
{{- end -}}
{{- required "externalEngine.url is required when engines.enabled is false" $url -}}
{{- end -}}
{{- end -}}
