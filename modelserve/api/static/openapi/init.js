// Swagger UI on the server's own description; validatorUrl null: no call to validator.swagger.io.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true });
