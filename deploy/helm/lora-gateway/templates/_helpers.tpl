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

{{- define "lora-gateway.gatewaySelector" -}}
app.kubernetes.io/name: {{ include "lora-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
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

{{/* The engine the gateway talks to: the first engine pod by its stable name, or the external router. */}}
{{- define "lora-gateway.engineUrl" -}}
{{- if .Values.engines.enabled -}}
{{- $engine := printf "%s-engine" (include "lora-gateway.fullname" .) -}}
{{- printf "http://%s-0.%s.%s.svc.cluster.local:8000" $engine $engine .Release.Namespace -}}
{{- else -}}
{{- required "externalEngine.url is required when engines.enabled is false" .Values.externalEngine.url -}}
{{- end -}}
{{- end -}}
