// A failed call, with the code the frame protocol answers.
export class CallError extends Error {
    constructor(code, message, extra = {}) {
        super(message);
        this.code = code;
        Object.assign(this, extra);
    }
}
