// The function both sides of bench/app serve: small JSON.
export function hello(path) {
    return { message: 'hello', path, at: 1764500000000 };
}
